"""Luigi tasks that copy the PacBook source into the warehouse's ``staging`` schema.

One ``ExtractSourceTable`` per source table; ``ExtractSource`` wraps all of them for a pipeline run.
Each task's output is a record in ``audit.extract_load`` written in the same transaction as the load,
so a rerun of the same pipeline run skips the tables already copied and redoes only the rest.
Connections are read inside ``run`` (never passed as parameters) so no password reaches Luigi's logs.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import multiprocessing
from collections.abc import Iterator

import luigi
from luigi.execution_summary import LuigiStatusCode

from include.luigi_tasks.streaming_copy import LoadWindow, check_table_copyable, copy_table_to_staging
from include.pacbook import config, validation, warehouse
from include.pacbook.session_roles import LOADING, warehouse_uri_for

log = logging.getLogger("pacbook.extract")


class StagingLoadTarget(luigi.Target):
    """Exists when the warehouse records a completed load of this table for this run."""

    def __init__(self, run_id: str, table: str):
        self.run_id = run_id
        self.table = table

    def exists(self) -> bool:
        return warehouse.load_is_recorded(warehouse_uri_for(LOADING), self.run_id, self.table)


class ExtractSourceTable(luigi.Task):
    run_id = luigi.Parameter(description="the Airflow run this load belongs to")
    table = luigi.Parameter(description="source table in schema public")
    interval_start = luigi.Parameter(default="", description="the run's data interval start (ISO 8601, UTC)")
    interval_end = luigi.Parameter(default="", description="the run's data interval end (ISO 8601, UTC)")
    as_of = luigi.Parameter(description="when the copy is taken (ISO 8601, UTC)")
    full_refresh = luigi.BoolParameter(default=False, description="reload growing tables whole")

    def output(self) -> StagingLoadTarget:
        return StagingLoadTarget(self.run_id, self.table)

    def run(self) -> None:
        warehouse_uri = warehouse_uri_for(LOADING)
        window = None
        if self.interval_start:
            window = LoadWindow(
                start=dt.datetime.fromisoformat(self.interval_start),
                end=dt.datetime.fromisoformat(self.interval_end),
                as_of=dt.datetime.fromisoformat(self.as_of),
            )
        try:
            rows = copy_table_to_staging(
                config.source_uri(), warehouse_uri, self.table, self.run_id, window, self.full_refresh
            )
        except Exception as error:
            warehouse.record_failure(warehouse_uri, self.run_id, self.table, f"{type(error).__name__}: {error}")
            raise
        log.info("extract table=%s rows=%d run=%s", self.table, rows, self.run_id)


class ExtractSource(luigi.WrapperTask):
    run_id = luigi.Parameter()
    tables = luigi.ListParameter(default=config.SOURCE_TABLES)
    interval_start = luigi.Parameter(default="")
    interval_end = luigi.Parameter(default="")
    as_of = luigi.Parameter()
    full_refresh = luigi.BoolParameter(default=False)

    def requires(self):
        return [
            ExtractSourceTable(
                run_id=self.run_id,
                table=table,
                interval_start=self.interval_start,
                interval_end=self.interval_end,
                as_of=self.as_of,
                full_refresh=self.full_refresh,
            )
            for table in self.tables
        ]


class StagingValidatedTarget(luigi.Target):
    """Exists when the run's validation (quarantine and counts) has committed."""

    def __init__(self, run_id: str):
        self.run_id = run_id

    def exists(self) -> bool:
        return validation.is_validated(warehouse_uri_for(LOADING), self.run_id)


class ValidateStaging(luigi.Task):
    """Moves the rows that break a rule (validation_rules.py) to quarantine once every table is copied."""

    run_id = luigi.Parameter()
    tables = luigi.ListParameter(default=config.SOURCE_TABLES)
    interval_start = luigi.Parameter(default="")
    interval_end = luigi.Parameter(default="")
    as_of = luigi.Parameter(description="when the copy was taken (ISO 8601): later dates are in the future")
    full_refresh = luigi.BoolParameter(default=False)

    def requires(self):
        return ExtractSource(
            run_id=self.run_id,
            tables=self.tables,
            interval_start=self.interval_start,
            interval_end=self.interval_end,
            as_of=self.as_of,
            full_refresh=self.full_refresh,
        )

    def output(self) -> StagingValidatedTarget:
        return StagingValidatedTarget(self.run_id)

    def run(self) -> None:
        as_of = dt.datetime.fromisoformat(self.as_of)
        validation.quarantine_bad_rows(warehouse_uri_for(LOADING), self.run_id, as_of, tuple(self.tables))


class ExtractionFailedError(RuntimeError):
    """Luigi reported failures; the message names every failed table and why."""


def extract_source(
    run_id: str,
    tables: tuple[str, ...] = config.SOURCE_TABLES,
    workers: int = 4,
    full_refresh: bool = False,
    as_of: dt.datetime | None = None,
    interval: tuple[dt.datetime, dt.datetime] | None = None,
) -> dict[str, int]:
    """Runs the Luigi extraction and validation for one pipeline run; returns rows copied per table.

    ``interval`` is the run's data interval: the growing tables take its rows plus the rows recorded
    late (streaming_copy.py). Without one (a load outside the schedule) every table is copied whole.
    ``as_of`` is when the copy is taken (default: now): dates after it are in the future. It is not
    the interval's end: a backfill of an old day may meet late rows dated after that day, and they
    are not bad rows.
    """
    as_of = as_of or dt.datetime.now(dt.UTC)
    start, end = (_naive_utc(moment).isoformat() for moment in interval) if interval else ("", "")
    with config.pinned_connections():
        return _extract_source(run_id, tables, workers, full_refresh, (start, end, _naive_utc(as_of).isoformat()))


def _naive_utc(moment: dt.datetime) -> dt.datetime:
    """The source stores timestamps without a zone, in UTC."""
    return moment.astimezone(dt.UTC).replace(tzinfo=None) if moment.tzinfo else moment


@contextlib.contextmanager
def _luigi_workers_forked() -> Iterator[None]:
    """Luigi starts its worker processes with multiprocessing's default start method. Under Airflow
    the task inherits the scheduler's ``forkserver`` (airflow_stack.TASK_PRELOAD_MODULES), whose
    children re-run the ``airflow`` entry point without the task's settings and die; Luigi's workers
    are meant to be forked from the task, with its connections and loaded modules."""
    before = multiprocessing.get_start_method(allow_none=True)
    multiprocessing.set_start_method("fork", force=True)
    try:
        yield
    finally:
        multiprocessing.set_start_method(before, force=True)


def _extract_source(
    run_id: str,
    tables: tuple[str, ...],
    workers: int,
    full_refresh: bool,
    window: tuple[str, str, str],
) -> dict[str, int]:
    """``luigi.build`` returns True even when tasks failed, so success is read from the detailed
    summary's status, and a failure raises with the tables' names and reasons.
    """
    warehouse_uri = warehouse_uri_for(LOADING)
    warehouse.ensure_schemas(warehouse_uri)
    if full_refresh:
        warehouse.forget_loads(warehouse_uri, run_id)
        validation.forget_validation(warehouse_uri, run_id)
    started = dt.datetime.now(dt.UTC)
    with _luigi_workers_forked():
        result = luigi.build(
            [
                ValidateStaging(
                    run_id=run_id,
                    tables=list(tables),
                    interval_start=window[0],
                    interval_end=window[1],
                    as_of=window[2],
                    full_refresh=full_refresh,
                )
            ],
            local_scheduler=True,
            detailed_summary=True,
            workers=min(workers, len(tables)),
            log_level="INFO",
        )
    log.info("luigi summary:\n%s", result.summary_text)
    incomplete = [t for t in tables if not warehouse.load_is_recorded(warehouse_uri, run_id, t)]
    if incomplete:
        reasons = warehouse.failures_for_run(warehouse_uri, run_id, started)
        details = "; ".join(
            f"{t}: {reasons.get(t, 'failed before recording a reason (Luigi log above)')}" for t in incomplete
        )
        raise ExtractionFailedError(
            f"extraction failed for {len(incomplete)} table(s) [{', '.join(incomplete)}] "
            f"(luigi status {result.status.name}): {details} — see RUNBOOK.md#extraction-failed"
        )
    if result.status not in (LuigiStatusCode.SUCCESS, LuigiStatusCode.SUCCESS_WITH_RETRY) or not (
        validation.is_validated(warehouse_uri, run_id)
    ):
        raise ExtractionFailedError(
            f"every table was copied but validating them failed (luigi status {result.status.name}); "
            "the Luigi log above has the error — see RUNBOOK.md#extraction-failed"
        )
    validation.log_rejections(warehouse_uri, run_id)
    # Checked on every attempt, so a retry of a run that rejected too much fails again.
    validation.check_rejected_share(validation.validation_results(warehouse_uri, run_id))
    return loaded_rows(warehouse_uri, run_id)


def loaded_rows(warehouse_uri: str, run_id: str) -> dict[str, int]:
    with warehouse.connect(warehouse_uri) as conn:
        return dict(
            conn.execute(
                "select table_name, rows_loaded from audit.extract_load where run_id = %s order by table_name",
                (run_id,),
            ).fetchall()
        )


def check_extraction(tables: tuple[str, ...] = config.SOURCE_TABLES) -> dict[str, int]:
    """A dry run of the extraction: every table checked, nothing copied; fails naming every problem."""
    source_uri, warehouse_uri = config.source_uri(), warehouse_uri_for(LOADING)
    counts, problems = {}, {}
    for table in tables:
        try:
            counts[table] = check_table_copyable(source_uri, warehouse_uri, table)
        except Exception as error:  # noqa: BLE001 - every table's problem is collected and reported together
            problems[table] = f"{type(error).__name__}: {error}"
    for table, rows in counts.items():
        log.info("dry run: table=%s source_rows=%d copyable", table, rows)
    if problems:
        details = "; ".join(f"{t}: {reason}" for t, reason in problems.items())
        raise ExtractionFailedError(
            f"dry run found {len(problems)} table(s) that would fail: {details} — see RUNBOOK.md#extraction-failed"
        )
    return counts
