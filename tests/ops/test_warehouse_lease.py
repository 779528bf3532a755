"""The warehouse lease on a real PostgreSQL: one running run writes at a time, whoever asks first,
and the lease ends with the run that holds it (success or failure)."""

from __future__ import annotations

import datetime as dt
import threading

import pytest

from include.pacbook import warehouse
from include.pacbook.pipeline_audit import run_failed, run_started, run_succeeded, take_warehouse
from tests.conftest import query_one

DAG = "pacbook_warehouse"
NIGHT = (dt.datetime(2024, 3, 25, tzinfo=dt.UTC), dt.datetime(2024, 3, 26, tzinfo=dt.UTC))


@pytest.fixture
def lease_warehouse(postgres) -> str:
    uri = postgres.fresh_database("warehouse_lease")
    warehouse.ensure_schemas(uri)
    return uri


def start(uri: str, run_id: str) -> None:
    run_started(uri, DAG, run_id, "backfill", *NIGHT)


def test_a_second_run_waits_for_the_holder_to_finish(lease_warehouse):
    start(lease_warehouse, "nightly")
    start(lease_warehouse, "backfill_1")
    assert take_warehouse(lease_warehouse, DAG, "nightly") is None
    assert take_warehouse(lease_warehouse, DAG, "nightly") is None  # a cleared task of the holder keeps it
    waiting = take_warehouse(lease_warehouse, DAG, "backfill_1")
    assert waiting is not None and waiting.startswith("run nightly has held it since ")
    run_succeeded(lease_warehouse, DAG, "nightly")
    assert take_warehouse(lease_warehouse, DAG, "backfill_1") is None


def test_a_failed_holder_releases_it_and_its_rerun_queues_again(lease_warehouse):
    start(lease_warehouse, "first")
    start(lease_warehouse, "second")
    assert take_warehouse(lease_warehouse, DAG, "first") is None
    run_failed(lease_warehouse, DAG, "first", "extract", "ExtractionFailedError: ...")
    assert take_warehouse(lease_warehouse, DAG, "second") is None
    # the failed run cleared and rerun starts again without the warehouse, and waits for the holder
    start(lease_warehouse, "first")
    assert query_one(
        lease_warehouse, "select holds_warehouse_since from audit.pipeline_run where run_id = 'first'"
    ) == (None,)
    assert take_warehouse(lease_warehouse, DAG, "first").startswith("run second has held it")


def test_runs_asking_at_once_get_it_one_at_a_time(lease_warehouse):
    runs = [f"backfill_{n}" for n in range(6)]
    for run_id in runs:
        start(lease_warehouse, run_id)
    barrier = threading.Barrier(len(runs))
    answers: dict[str, str | None] = {}

    def ask(run_id: str) -> None:
        barrier.wait()
        answers[run_id] = take_warehouse(lease_warehouse, DAG, run_id)

    threads = [threading.Thread(target=ask, args=(run_id,)) for run_id in runs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    winners = [run_id for run_id, holder in answers.items() if holder is None]
    assert len(winners) == 1
    assert all(f"run {winners[0]} has held it" in holder for holder in answers.values() if holder)
    assert query_one(
        lease_warehouse, "select count(*) from audit.pipeline_run where holds_warehouse_since is not null"
    ) == (1,)
