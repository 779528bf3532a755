"""What the DAG's Python tasks do, kept out of the DAG file so it stays wiring only."""

from __future__ import annotations

import datetime as dt
import logging

from include.pacbook import config
from include.pacbook.session_roles import LOADING, READING_THE_MARTS, TRANSFORMING, warehouse_uri_for

log = logging.getLogger("pacbook.pipeline")


def start_run(dag_id: str, run_id: str, run_type: str | None, interval_start, interval_end) -> None:
    from include.pacbook.pipeline_audit import run_started

    run_started(warehouse_uri_for(LOADING), dag_id, run_id, run_type, interval_start, interval_end)


class SourceNotReadyError(RuntimeError):
    """The source stayed unready for the whole wait; the message says what was wrong at the last look."""


def wait_for_source(first_poke_at, poke_seconds: int, interval_end: dt.datetime) -> bool:
    """One poke of the source sensor: is there data up to the night's end? Gives up one poke before
    Airflow's own timeout would, so the failure says *why* the source is not ready instead of only
    that time ran out."""
    from include.pacbook.source_checks import check_source_ready

    readiness = check_source_ready(config.source_uri(), interval_end)
    log.info("source_ready: %s", readiness.reason)
    if readiness.ready:
        return True
    waited = (dt.datetime.now(dt.UTC) - first_poke_at).total_seconds() if first_poke_at else 0.0
    limit = config.source_wait_seconds()
    if waited + poke_seconds > limit:
        raise SourceNotReadyError(
            f"source not ready after waiting {waited:.0f} s of {limit} s: {readiness.reason} "
            "(RUNBOOK.md#source-not-ready)"
        )
    return False


class WarehouseBusyError(RuntimeError):
    """Another run kept the warehouse for the whole wait; the message names it."""


def wait_for_warehouse(dag_id: str, run_id: str, first_poke_at, poke_seconds: int) -> bool:
    """One poke of the warehouse gate: take the warehouse unless another running run writes it."""
    from include.pacbook.pipeline_audit import take_warehouse

    holder = take_warehouse(warehouse_uri_for(LOADING), dag_id, run_id)
    if holder is None:
        log.info("warehouse_free: run %s now holds the warehouse", run_id)
        return True
    log.info("warehouse_free: waiting, %s", holder)
    waited = (dt.datetime.now(dt.UTC) - first_poke_at).total_seconds() if first_poke_at else 0.0
    limit = config.warehouse_wait_seconds()
    if waited + poke_seconds > limit:
        raise WarehouseBusyError(
            f"warehouse still busy after waiting {waited:.0f} s of {limit} s: {holder} (RUNBOOK.md#warehouse-busy)"
        )
    return False


def extract_source_to_staging(
    run_id: str, interval_start: dt.datetime, interval_end: dt.datetime, full_refresh: bool = False
) -> dict[str, int]:
    """Loads the run's interval (the growing tables by increment, the small ones whole) and validates it."""
    from include.luigi_tasks.extract_source import extract_source

    rows = extract_source(run_id, full_refresh=full_refresh, interval=(interval_start, interval_end))
    log.info("extracted %d rows from %d tables", sum(rows.values()), len(rows))
    return rows


def landing_files_waiting() -> bool:
    from include.pacbook.landing_zone import pending_landing_files

    pending = pending_landing_files(warehouse_uri_for(LOADING))
    log.info("landing_files: %d pending: %s", len(pending), ", ".join(p.name for p in pending) or "none")
    return bool(pending)


def ingest_landing_files(run_id: str) -> dict:
    from include.luigi_tasks.landing_zone import ingest_landing_zone

    return ingest_landing_zone(warehouse_uri_for(LOADING), run_id)


def forecast_sales(run_date) -> dict[str, float | None]:
    """Writes the 6-month forecast and its backtest; returns the backtest MAPE per measure and method."""
    from include.pacbook.forecast import write_sales_forecast

    result = write_sales_forecast(warehouse_uri_for(TRANSFORMING), run_date)
    # NaN is not JSON: a month without sales has no percentage error.
    return {
        f"{r.measure}/{r.method}": (None if r.mape != r.mape else round(float(r.mape), 4))
        for r in result.backtest.itertuples()
    }


def export_marts(run_id: str, run_date) -> dict[str, int]:
    """The analysts' copy of every mart: Parquet files and one DuckDB file, swapped in atomically."""
    from include.pacbook.exports import export_marts as export

    return export(warehouse_uri_for(READING_THE_MARTS), config.exports_dir(), run_id=run_id, run_date=run_date)


def write_reports(run_id: str, report_date) -> dict[str, str]:
    """The daily report of the run's day, and the month-end report when that day ends a month."""
    from include.pacbook.reports import write_reports as write

    written = write(warehouse_uri_for(TRANSFORMING), report_date, config.reports_dir(), run_id=run_id)
    return {name: str(path) for name, path in written.items()}


def publish_dbt_docs() -> str:
    """dbt's static documentation site, next to the reports (openable without a server)."""
    from include.pacbook.reports import publish_dbt_docs as publish

    return str(publish(warehouse_uri_for(TRANSFORMING), config.reports_dir()))


def finish_run(dag_id: str, run_id: str) -> dict[str, dict[str, int]]:
    from include.pacbook.pipeline_audit import run_succeeded

    return run_succeeded(warehouse_uri_for(LOADING), dag_id, run_id)


def check_extraction_only(dag_id: str, run_id: str) -> dict[str, int]:
    from include.luigi_tasks.extract_source import check_extraction
    from include.pacbook.pipeline_audit import run_succeeded

    counts = check_extraction()
    run_succeeded(warehouse_uri_for(LOADING), dag_id, run_id)
    return counts


def reconcile_with_source(run_id: str, interval_start, interval_end, selected_rebuild: bool = False) -> dict:
    """Source vs warehouse + quarantine for the interval and all time; fails on any difference.
    After a ``dbt_select`` run, only when the selection left no model behind staging."""
    from include.pacbook.dbt_cli import nodes_behind_staging
    from include.pacbook.reconciliation import reconcile

    if selected_rebuild and (behind := nodes_behind_staging(warehouse_uri_for(TRANSFORMING))):
        # The selection rebuilt part of the model on purpose: the rest lags tonight's copy, so a
        # difference would be the selection's doing, not a lost row.
        shown = "; ".join(f"{name}: {reason}" for name, reason in list(behind.items())[:5])
        why = (
            f"this dbt_select run left {len(behind)} models behind staging ({shown}{' ...' if len(behind) > 5 else ''})"
        )
        log.warning("reconcile: not compared, %s", why)
        return {"not compared": why}
    comparisons = reconcile(config.source_uri(), warehouse_uri_for(TRANSFORMING), run_id, interval_start, interval_end)
    return {f"{c.measure} [{c.window}]": str(c.source) for c in comparisons}


def build_selected_models(selector: str, full_refresh: bool, snapshot_at: str, run_id: str) -> None:
    from include.pacbook.dbt_cli import run_dbt

    run_dbt(
        "build",
        "--select",
        selector,
        *(["--full-refresh"] if full_refresh else []),
        snapshot_at=snapshot_at,
        warehouse_uri=warehouse_uri_for(TRANSFORMING),
        record_as_run=run_id,
    )
