"""The audit of task outcomes: one row per task try in the warehouse's ``audit.task_run``.

Written by the listener plugin ``plugins/pacbook_audit_listener.py``, whose hooks call
``record_from_task_instance``. Where the hooks fire in Airflow 3.3 (checked in the Task SDK and
core sources, ``airflow/sdk/execution_time/task_runner.py::finalize`` and
``airflow/models/taskinstance.py::handle_failure``):

* ``on_task_instance_success`` / ``on_task_instance_failed`` / ``on_task_instance_skipped`` fire in
  the **task's worker process** (the Task SDK's task runner) right after the try ends, with a
  ``RuntimeTaskInstance`` whose ``state`` is already final for the try (``success``, ``skipped``,
  ``up_for_retry`` or ``failed`` — a retried try reaches ``on_task_instance_failed`` too) and whose
  ``start_date`` / ``end_date`` / ``try_number`` / ``max_tries`` are set; ``error`` is the exception.
* ``on_task_instance_failed`` also fires in the **scheduler** when it fails a task itself (the
  executor reported a failure, a heartbeat timeout), and both hooks fire in the **API server** when
  a user marks a task success/failed; there ``task_instance`` is the ORM ``TaskInstance``.
* ``on_task_instance_running`` fires in the worker when the try starts; not recorded here.

The listener must never fail or stall a task: every error is logged and swallowed, connections
time out after 10 s, and ``PACBOOK_TASK_AUDIT=off`` turns recording off.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from include.pacbook import config, warehouse
from include.pacbook.notifications import cause_of
from include.pacbook.session_roles import LOADING, warehouse_uri_for

log = logging.getLogger(__name__)

TASK_RUN_DDL = """
create table if not exists audit.task_run (
    run_id text not null,
    dag_id text not null,
    task_id text not null,
    try_number integer not null,
    state text not null,
    started_at timestamptz,
    finished_at timestamptz,
    duration_seconds double precision,
    rows bigint,
    error text,
    recorded_at timestamptz not null default clock_timestamp(),
    primary key (dag_id, run_id, task_id, try_number)
);
comment on table audit.task_run is
    'One row per Airflow task try of the PacBook DAG, written by the audit listener plugin when the '
    'try ends: state, timing, rows (sum of the task''s returned counts, when it returns them) and the '
    'error in one line. A later outcome of the same try (e.g. marked success in the UI) replaces it.';
"""

_UPSERT = """
insert into audit.task_run
    (run_id, dag_id, task_id, try_number, state, started_at, finished_at, duration_seconds, rows, error)
values (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
on conflict (dag_id, run_id, task_id, try_number) do update set
    state = excluded.state,
    started_at = coalesce(excluded.started_at, audit.task_run.started_at),
    finished_at = excluded.finished_at,
    duration_seconds = coalesce(excluded.duration_seconds, audit.task_run.duration_seconds),
    rows = coalesce(excluded.rows, audit.task_run.rows),
    error = excluded.error,
    recorded_at = clock_timestamp()
"""

_ensured: set[str] = set()


def ensure_task_run_table(uri: str) -> None:
    """Creates the warehouse schemas and ``audit.task_run`` (once per process and database)."""
    if uri in _ensured:
        return
    warehouse.ensure_schemas(uri)
    with warehouse.connect(uri, autocommit=True) as conn, conn.transaction():
        conn.execute("select pg_advisory_xact_lock(hashtext('pacbook.ensure_task_run'))")
        conn.execute(TASK_RUN_DDL)
    _ensured.add(uri)


def rows_from_result(value: Any) -> int | None:
    """The row count a task reported: the sum of a ``{name: int}`` return value; else None."""
    if isinstance(value, dict) and value:
        counts = list(value.values())
        if all(isinstance(count, int) and not isinstance(count, bool) for count in counts):
            return sum(counts)
    return None


@dataclass(frozen=True)
class TaskOutcome:
    dag_id: str
    run_id: str
    task_id: str
    try_number: int
    state: str
    started_at: datetime | None = None
    finished_at: datetime | None = None
    rows: int | None = None
    error: str | None = None

    @property
    def duration_seconds(self) -> float | None:
        if self.started_at is None or self.finished_at is None:
            return None
        return max(0.0, (self.finished_at - self.started_at).total_seconds())


def record_task_outcome(outcome: TaskOutcome, uri: str | None = None) -> bool:
    """Writes (or replaces) the try's row in ``audit.task_run``; True when written. Never raises."""
    try:
        uri = uri or warehouse_uri_for(LOADING)
        ensure_task_run_table(uri)
        with warehouse.connect(uri, autocommit=True) as conn:
            conn.execute(
                _UPSERT,
                (
                    outcome.run_id,
                    outcome.dag_id,
                    outcome.task_id,
                    outcome.try_number,
                    outcome.state,
                    outcome.started_at,
                    outcome.finished_at,
                    outcome.duration_seconds,
                    outcome.rows,
                    outcome.error,
                ),
            )
        return True
    except Exception as error:  # noqa: BLE001 - auditing must never fail the task it audits
        log.warning("PacBook task audit: could not record %s (%s: %s)", outcome, type(error).__name__, error)
        return False


# --- from Airflow's task instance ----------------------------------------------------------------


def _state(task_instance: Any, default: str) -> str:
    state = getattr(task_instance, "state", None)
    value = str(getattr(state, "value", state) or "").lower()
    return value or default


def _returned_rows(task_instance: Any) -> int | None:
    """The task's XCom return value as a row count, read in the worker; the API server's and the
    scheduler's ORM ``TaskInstance`` is not asked (their hooks are about someone else's try)."""
    if type(task_instance).__module__.startswith("airflow.models") or not hasattr(task_instance, "xcom_pull"):
        return None
    try:
        return rows_from_result(task_instance.xcom_pull(task_ids=task_instance.task_id, key="return_value"))
    except Exception as error:  # noqa: BLE001 - the count is optional
        log.debug("PacBook task audit: no row count for %s: %s", getattr(task_instance, "task_id", "?"), error)
        return None


def outcome_from_task_instance(
    task_instance: Any, default_state: str, error: BaseException | str | None = None
) -> TaskOutcome:
    state = _state(task_instance, default_state)
    if default_state == "failed" and state not in ("failed", "up_for_retry"):
        state = "failed"  # the hook says the try failed, whatever the instance still shows
    finished = getattr(task_instance, "end_date", None) or datetime.now(UTC)
    return TaskOutcome(
        dag_id=str(task_instance.dag_id),
        run_id=str(task_instance.run_id),
        task_id=str(task_instance.task_id),
        try_number=int(getattr(task_instance, "try_number", None) or 0),
        state=state,
        started_at=getattr(task_instance, "start_date", None),
        finished_at=finished,
        rows=_returned_rows(task_instance) if state == "success" else None,
        error=cause_of(error) if (error is not None or default_state == "failed") else None,
    )


def record_from_task_instance(task_instance: Any, default_state: str, error: BaseException | str | None = None) -> None:
    """What the listener hooks call: never raises."""
    try:
        if not config.task_audit_enabled():
            return
        outcome = outcome_from_task_instance(task_instance, default_state, error)
        if record_task_outcome(outcome) and outcome.state == "failed":
            from include.pacbook.pipeline_audit import run_failed

            run_failed(warehouse_uri_for(LOADING), outcome.dag_id, outcome.run_id, outcome.task_id, outcome.error)
    except Exception:  # noqa: BLE001 - auditing must never fail the task it audits
        log.exception("PacBook task audit: could not record the outcome of %r", task_instance)
