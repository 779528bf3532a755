"""Failure alerts: what a notice says, where it points, and that it really arrives (SMTP and webhook)."""

from __future__ import annotations

import asyncio
import logging
import socket
from datetime import UTC, datetime
from types import SimpleNamespace

import pytest

from include.pacbook import config
from include.pacbook.notifications import (
    FailureNotice,
    PacbookFailureNotifier,
    cause_of,
    notice_from_context,
    notify_deadline_missed,
    runbook_section_for,
    send_notice,
)
from include.pacbook.smtp_sink import read_messages


class ExtractionFailedError(RuntimeError):
    """Same name and shape as the Luigi extraction's error (include/luigi_tasks/extract_source.py)."""


RUN_ID = "scheduled__2025-03-10T00:00:00+00:00"


def _context(task_id: str, error: BaseException, *, state: str, try_number: int = 1, max_tries: int = 2, log_url=None):
    ti = SimpleNamespace(
        dag_id=config.DAG_ID,
        run_id=RUN_ID,
        task_id=task_id,
        try_number=try_number,
        max_tries=max_tries,
        map_index=-1,
        state=state,
        log_url=log_url,
    )
    dag_run = SimpleNamespace(dag_id=config.DAG_ID, run_id=RUN_ID)
    return {"ti": ti, "dag_run": dag_run, "exception": error, "task_instance": ti}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize(
    ("task_id", "error_text", "section"),
    [
        ("source_ready", "source database does not answer: connection refused", "source-not-ready"),
        ("source_ready", "AirflowSensorTimeout: Sensor has timed out", "source-not-ready"),
        ("extract", "ExtractionFailedError: extraction failed for 1 table(s) [book]", "extraction-failed"),
        ("extract", "source table public.book no longer matches staging.book: new or changed columns", "schema-drift"),
        ("extract", "AirflowTaskTimeout: Timeout, PID: 123", "extraction-failed"),
        (
            "marts.fct_sales_model_build",
            "CosmosDbtRunError: dbt invocation completed with errors: not_null_fct_sales_id: "
            "Got 3 results, configured to fail if != 0",
            "dbt-test-failed",
        ),
        ("dwh.dim_book_model_build", "Failure in test unique_dim_book_key (models/dwh/schema.yml)", "dbt-test-failed"),
        (
            "staging.layer_tests",
            "CosmosDbtRunError: dbt invocation completed with errors: assert_every_order_has_a_line: "
            "Got 2 results, configured to fail if != 0",
            "dbt-test-failed",
        ),
        ("dwh.dim_book_model_build", "CosmosDbtRunError: Database Error in model dim_book", "dbt-model-failed"),
        ("forecast", "ValueError: not enough history", "forecast-failed"),
        ("warehouse_free", "WarehouseBusyError: warehouse still busy after waiting 21590 s", "warehouse-busy"),
        ("extract", "TooManyRejectedRowsError: rejected rows over the threshold of 5.0%", "rejected-rows"),
        ("ingest_landing_files", "LandingZoneError: 1 file(s) failed", "landing-zone"),
        ("reconcile", "ReconciliationError: the warehouse does not reconcile", "reconciliation-failed"),
        ("write_reports", "OSError: disk full", "publish-failed"),
        ("deadline", "", "deadline-missed"),
        (None, "run missed its deadline", "deadline-missed"),
        ("something_new", "KeyError: x", "general"),
        (None, None, "general"),
    ],
)
def test_runbook_section_for(task_id, error_text, section):
    assert runbook_section_for(task_id, error_text) == section


def test_cause_is_one_line_type_and_first_line_truncated():
    error = ExtractionFailedError("extraction failed for 2 table(s) [book, author]: book: gone\nauthor: also gone")
    assert cause_of(error) == "ExtractionFailedError: extraction failed for 2 table(s) [book, author]: book: gone"
    long = cause_of(RuntimeError("x" * 1000))
    assert len(long) <= 300 and "\n" not in long and long.startswith("RuntimeError: xxx")
    assert cause_of(None).startswith("unknown error")
    assert cause_of(KeyError()) == "KeyError"


def test_notice_from_a_retried_try(monkeypatch):
    monkeypatch.setenv("AIRFLOW__API__BASE_URL", "http://airflow.example:8080/")
    error = ExtractionFailedError(
        "extraction failed for 1 table(s) [book]: book: source table public.book does not exist"
    )
    notice = notice_from_context(_context("extract", error, state="up_for_retry", try_number=1, max_tries=2))
    assert notice.kind == "task_failed"
    assert notice.runbook_section == "extraction-failed"
    assert notice.runbook == "RUNBOOK.md#extraction-failed"
    # no ti.log_url: built from Airflow's base URL, like Airflow's own
    assert notice.log_url == (
        "http://airflow.example:8080/dags/pacbook_warehouse/runs/scheduled__2025-03-10T00%3A00%3A00%2B00%3A00"
        "/tasks/extract?try_number=1"
    )
    assert notice.subject() == (
        "[PacBook] extract failed: ExtractionFailedError: extraction failed for 1 table(s) [book]: "
        "book: source table public.book does not exist"
    )
    body = notice.body().splitlines()
    assert body == [
        "Kind: task_failed",
        "DAG: pacbook_warehouse",
        f"Run: {RUN_ID}",
        "Task: extract",
        "Try: 1 of 3",
        f"Cause: {notice.cause}",
        f"Log: {notice.log_url}",
        "Runbook: RUNBOOK.md#extraction-failed",
    ]


def test_notice_kinds_follow_the_try_state():
    final = notice_from_context(
        _context("forecast", ValueError("boom"), state="failed", try_number=3, max_tries=2, log_url="http://x/log")
    )
    assert (final.kind, final.runbook_section, final.log_url) == (
        "retries_exhausted",
        "forecast-failed",
        "http://x/log",
    )
    assert final.subject() == "[PacBook] forecast failed, retries exhausted: ValueError: boom"
    dbt = notice_from_context(
        _context(
            "marts.fct_sales_model_build",
            RuntimeError("dbt invocation completed with errors: not_null_x: Got 1 result, configured to fail if != 0"),
            state="up_for_retry",
        )
    )
    assert dbt.kind == "dbt_test_failed" and dbt.runbook_section == "dbt-test-failed"
    # no state on the instance: decided by the try count
    ctx = _context("extract", RuntimeError("x"), state=None, try_number=3, max_tries=2)
    assert notice_from_context(ctx).kind == "retries_exhausted"
    assert notice_from_context(ctx, kind="task_failed").kind == "task_failed"
    with pytest.raises(ValueError):
        FailureNotice("d", "r", "t", 1, 0, "c", "u", "general", kind="nonsense")


def test_send_notice_delivers_a_real_email(smtp_sink, monkeypatch):
    monkeypatch.setenv("PACBOOK_ALERT_EMAIL_TO", "oncall@pacbook.local, lead@pacbook.local")
    monkeypatch.setenv("PACBOOK_ALERT_EMAIL_FROM", "airflow@pacbook.local")
    notice = notice_from_context(
        _context(
            "extract", ExtractionFailedError("extraction failed for 1 table(s) [book]"), state="failed", try_number=3
        )
    )
    assert send_notice(notice) == {"email": "sent"}
    [message] = read_messages(smtp_sink.directory)
    assert message["Subject"] == notice.subject()
    assert message["Subject"].startswith("[PacBook] extract failed, retries exhausted: ExtractionFailedError: ")
    assert message["To"] == "oncall@pacbook.local, lead@pacbook.local"
    assert message["From"] == "airflow@pacbook.local"
    assert message["X-PacBook-Sink-Rcpt-To"] == "<oncall@pacbook.local>, <lead@pacbook.local>"
    body = message.get_content()
    for expected in (
        "DAG: pacbook_warehouse",
        f"Run: {RUN_ID}",
        "Task: extract",
        "Try: 3 of 3",
        "Cause: ExtractionFailedError: extraction failed for 1 table(s) [book]",
        f"Log: {notice.log_url}",
        "Runbook: RUNBOOK.md#extraction-failed",
    ):
        assert expected in body.splitlines()


def test_the_sent_alerts_log_line_carries_the_whole_cause_and_the_runbook(smtp_sink, caplog):
    """The notifier's line is often the last of a failed task's log: an e-mail subject is cut, this is not."""
    reason = "source not ready after waiting 33 s of 45 s: source database does not answer: " + "x" * 200
    notice = notice_from_context(_context("source_ready", RuntimeError(reason), state="failed", max_tries=0))
    assert len(notice.subject()) == 250 and notice.subject().endswith("…")
    with caplog.at_level(logging.INFO, logger="include.pacbook.notifications"):
        assert send_notice(notice) == {"email": "sent"}
    [line] = [r.getMessage() for r in caplog.records if r.getMessage().startswith("PacBook alert sent")]
    assert f"RuntimeError: {reason}" in line
    assert line.endswith("| runbook: RUNBOOK.md#source-not-ready")


def test_send_notice_posts_json_to_the_webhook(smtp_sink, webhook, monkeypatch):
    monkeypatch.setenv("PACBOOK_ALERT_WEBHOOK_URL", webhook.url)
    notice = notice_from_context(_context("forecast", ValueError("no history"), state="up_for_retry"))
    assert send_notice(notice) == {"email": "sent", "webhook": "sent"}
    [request] = webhook.requests
    assert request["path"] == "/hooks/pacbook"
    assert request["content_type"] == "application/json"
    payload = request["json"]
    assert payload["dag_id"] == "pacbook_warehouse" and payload["run_id"] == RUN_ID
    assert payload["task_id"] == "forecast" and payload["try_number"] == 1 and payload["max_tries"] == 2
    assert payload["kind"] == "task_failed" and payload["cause"] == "ValueError: no history"
    assert payload["runbook"] == "RUNBOOK.md#forecast-failed" and payload["subject"] == notice.subject()
    assert len(read_messages(smtp_sink.directory)) == 1


def test_undeliverable_alert_is_logged_never_raised(monkeypatch, webhook, caplog):
    monkeypatch.setenv("PACBOOK_SMTP_HOST", "127.0.0.1")
    monkeypatch.setenv("PACBOOK_SMTP_PORT", str(_free_port()))  # nobody listens
    webhook.status = 500
    monkeypatch.setenv("PACBOOK_ALERT_WEBHOOK_URL", webhook.url)
    notice = notice_from_context(_context("extract", RuntimeError("the original failure"), state="failed"))
    with caplog.at_level(logging.ERROR, logger="include.pacbook.notifications"):
        outcome = send_notice(notice)
    assert outcome["email"].startswith("failed: ConnectionRefusedError")
    assert outcome["webhook"] == "failed: HTTP 500 Internal Server Error"
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert "NOT delivered by email" in logged and "NOT delivered by webhook" in logged
    assert "RuntimeError: the original failure" in logged  # the alert's content is kept in the log


def test_notifier_is_an_airflow_notifier_and_sends(smtp_sink):
    from airflow.sdk import BaseNotifier

    notifier = PacbookFailureNotifier()
    assert isinstance(notifier, BaseNotifier)
    notifier(_context("source_ready", RuntimeError("source database does not answer: refused"), state="failed"))
    [message] = read_messages(smtp_sink.directory)
    assert "Runbook: RUNBOOK.md#source-not-ready" in message.get_content()
    # a broken context is logged, not raised into Airflow's callback runner
    PacbookFailureNotifier()({"nothing": "useful"})
    assert len(read_messages(smtp_sink.directory)) == 1


def test_deadline_callback_delivers(smtp_sink, webhook, monkeypatch):
    monkeypatch.setenv("PACBOOK_ALERT_WEBHOOK_URL", webhook.url)
    monkeypatch.setenv("AIRFLOW__API__BASE_URL", "http://127.0.0.1:8080")
    # the shape Airflow 3.3's scheduler queues for the triggerer (models/deadline.py, handle_miss)
    context = {
        "dag_run": {"dag_id": "pacbook_warehouse", "dag_run_id": RUN_ID, "state": "running", "conf": {}},
        "deadline": {"id": "0197-abc", "deadline_time": datetime(2025, 3, 11, 6, tzinfo=UTC).isoformat()},
    }
    outcome = asyncio.run(notify_deadline_missed(context=context, team="data-platform"))
    assert outcome == "email: sent; webhook: sent"  # a string: Airflow keeps it in a text column
    [message] = read_messages(smtp_sink.directory)
    assert message["Subject"].startswith("[PacBook] pacbook_warehouse missed its deadline: run not finished by")
    body = message.get_content().splitlines()
    assert "Kind: deadline_missed" in body and f"Run: {RUN_ID}" in body and "Task: (whole run)" in body
    assert "Runbook: RUNBOOK.md#deadline-missed" in body
    quoted_run = RUN_ID.replace(":", "%3A").replace("+", "%2B")
    assert f"Log: http://127.0.0.1:8080/dags/pacbook_warehouse/runs/{quoted_run}" in body
    assert webhook.requests[0]["json"]["kind"] == "deadline_missed"
    # an unexpected context still yields an alert
    assert asyncio.run(notify_deadline_missed(context="odd", dag_id="x")) == "email: sent; webhook: sent"
    assert asyncio.run(notify_deadline_missed()) == "email: sent; webhook: sent"
    assert len(read_messages(smtp_sink.directory)) == 3


def test_deadline_callback_is_importable_by_dotted_path_and_accepts_context():
    from airflow._shared.module_loading import accepts_context, import_string
    from airflow.sdk import AsyncCallback

    callback = import_string("include.pacbook.notifications.notify_deadline_missed")
    assert accepts_context(callback)
    AsyncCallback(callback, kwargs={"team": "data-platform"})  # accepted as an awaitable top-level callable
