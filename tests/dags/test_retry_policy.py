"""Retries only for failures a retry can fix."""

from __future__ import annotations

import psycopg
import pytest
from airflow.sdk.definitions.retry_policy import RetryAction

from include.luigi_tasks.extract_source import ExtractionFailedError
from include.luigi_tasks.streaming_copy import SourceTableMissingError, StagingSchemaDriftError
from include.pacbook.retry_policy import RetryOnlyTransientFailures

POLICY = RetryOnlyTransientFailures()


@pytest.mark.parametrize(
    "error",
    [
        SourceTableMissingError("source table public.order_history does not exist"),
        StagingSchemaDriftError("source table public.book no longer matches staging.book: new columns ['x']"),
        ExtractionFailedError(
            "extraction failed for 1 table(s) [book]: book: SourceTableMissingError: "
            "source table public.book does not exist"
        ),
        RuntimeError("dbt invocation completed with errors: Failure in test unique_dim_book_book_key"),
        RuntimeError("Tests for model 'model.pacbook.fct_sales' finished with status 'fail'"),
        RuntimeError(
            "source not ready after waiting 40 s of 45 s: source database does not answer: "
            "connection failed: connection to server at 127.0.0.1, port 9 failed: Connection refused"
        ),
        RuntimeError(
            "warehouse still busy after waiting 21590 s of 21600 s: run scheduled__2026-11-30T00:00:00+00:00 "
            "has held it since 2026-11-30 00:05:00 UTC (RUNBOOK.md#warehouse-busy)"
        ),
        RuntimeError("source table public.order_history is empty: a shop never loses all of its order_history rows"),
        RuntimeError("rejected rows over the threshold of 5.0% per table: customer: 9 of 100 (9.0%)"),
    ],
)
def test_errors_a_retry_cannot_fix_fail_at_once(error):
    decision = POLICY.evaluate(error, try_number=1, max_tries=3)
    assert decision.action is RetryAction.FAIL
    assert "a retry cannot fix it" in decision.reason


@pytest.mark.parametrize(
    "error",
    [
        psycopg.OperationalError(
            'connection failed: connection to server at "127.0.0.1", port 9 failed: Connection refused'
        ),
        ExtractionFailedError(
            "extraction failed for 2 table(s) [a, b]: a: OperationalError: could not connect; "
            "b: relation does not exist"
        ),
        RuntimeError("canceling statement due to lock timeout"),
        TimeoutError("timed out"),
    ],
)
def test_transient_or_unknown_errors_keep_the_normal_retries(error):
    assert POLICY.evaluate(error, try_number=1, max_tries=3).action is RetryAction.DEFAULT
