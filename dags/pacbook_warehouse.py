"""
### PacBook warehouse — the nightly run

`source_ready` (sensor) → `extract` (Luigi: 15 source tables → `staging`, streamed by COPY, then
validated: rows breaking a rule go to `quarantine.<table>`, counted in `audit.rejected_rows`)
→ `landing_files` (sensor, soft) → `ingest_landing_files` (Luigi: publishers' price lists → Parquet → `staging`)
→ dbt via Cosmos: `staging` → `dwh` (snapshots, dimensions, facts) → `marts`
→ `forecast` (6 months of revenue and quantity, with its backtest)
→ `reconcile` (source = warehouse + quarantine, for the interval and all time)
→ `export_marts` (Parquet + DuckDB), `write_reports` (daily, and month-end on the last day),
`publish_dbt_docs` → `finish_run` (the run's row in `audit.pipeline_run`).

Each dbt task builds one model and runs its tests, unless nothing it reads changed since its last
build: then it ends without running dbt (the log says why; RUNBOOK.md#up-to-date-dbt-tasks).
A layer's `layer_tests` task runs, after its models, the tests no model's task can (on sources,
across sibling models).
Connections: `pacbook_source`, `pacbook_warehouse`. Runbook: `RUNBOOK.md` in the repository.

**Trigger parameters**: `full_refresh` rebuilds every model and reloads every table;
`dbt_select` rebuilds only what a dbt selector names (e.g. `marts.monthly_sales+`);
`dry_run` runs the sensor and the extraction checks only.
"""

from datetime import timedelta

import pendulum
from airflow.sdk import (
    AsyncCallback,
    CronDataIntervalTimetable,
    DeadlineAlert,
    DeadlineReference,
    Param,
    dag,
    task,
)

from include.pacbook import config
from include.pacbook.dbt_groups import dbt_layer
from include.pacbook.notifications import PacbookFailureNotifier, notify_deadline_missed
from include.pacbook.retry_policy import RetryOnlyTransientFailures

DEFAULT_ARGS = {
    "owner": "data-platform",
    "retries": 2,
    "retry_delay": timedelta(seconds=config.retry_delay_seconds()),
    "retry_exponential_backoff": True,
    "max_retry_delay": timedelta(minutes=10),
    "retry_policy": RetryOnlyTransientFailures(),
    "on_failure_callback": PacbookFailureNotifier(),
    "on_retry_callback": PacbookFailureNotifier(),
    "execution_timeout": timedelta(minutes=20),
}

PARAMS = {
    "full_refresh": Param(
        False,
        type="boolean",
        title="Full refresh",
        description="Reload every source table and rebuild every dbt model from scratch.",
    ),
    "dbt_select": Param(
        "",
        type="string",
        title="dbt selector",
        maxLength=300,
        pattern=r"^[A-Za-z0-9_.:+*@,/ -]*$",
        description="Rebuild only these dbt nodes (dbt selection syntax); empty = the whole project.",
    ),
    "dry_run": Param(
        False,
        type="boolean",
        title="Dry run",
        description="Run the source sensor and the extraction checks only; write nothing.",
    ),
}


SOURCE_POKE_SECONDS = 30


def _interval(dag_run) -> tuple:
    """The run's data interval; a manual run without one covers the day before it was triggered."""
    end = dag_run.data_interval_end or dag_run.run_after
    return (dag_run.data_interval_start or end - timedelta(days=1), end)


@dag(
    dag_id=config.DAG_ID,
    # A data-interval timetable, so the run for 2025-03-10 covers 2025-03-10 and backfills are exact.
    schedule=CronDataIntervalTimetable(config.nightly_schedule(), timezone="UTC"),
    start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    params=PARAMS,
    # Measured from when the run is queued: a nightly run is queued as its day closes, and a backfill
    # or manual run gets the same allowance instead of being "late" the moment it starts.
    deadline=DeadlineAlert(
        reference=DeadlineReference.DAGRUN_QUEUED_AT,
        interval=timedelta(minutes=config.run_deadline_minutes()),
        callback=AsyncCallback(notify_deadline_missed, kwargs={"reason": "the nightly run is late"}),
    ),
    tags=["pacbook", "warehouse", "dbt", "luigi"],
    doc_md=__doc__,
)
def pacbook_warehouse():
    @task.sensor(
        poke_interval=SOURCE_POKE_SECONDS,
        timeout=config.source_wait_seconds(),
        mode="reschedule",
        execution_timeout=timedelta(minutes=2),
    )
    def source_ready(dag_run=None, ti=None) -> bool:
        from airflow.sdk import get_current_context

        from include.pacbook.pipeline import start_run, wait_for_source

        interval = _interval(dag_run)
        start_run(dag_run.dag_id, dag_run.run_id, str(dag_run.run_type), *interval)
        return wait_for_source(ti.get_first_reschedule_date(get_current_context()), SOURCE_POKE_SECONDS, interval[1])

    @task.sensor(
        poke_interval=SOURCE_POKE_SECONDS,
        timeout=config.warehouse_wait_seconds(),
        mode="reschedule",
        execution_timeout=timedelta(minutes=2),
    )
    def warehouse_free(dag_run=None, ti=None) -> bool:
        """One run writes at a time: backfills run beside the nightly schedule."""
        from airflow.sdk import get_current_context

        from include.pacbook.pipeline import wait_for_warehouse

        first_poke_at = ti.get_first_reschedule_date(get_current_context())
        return wait_for_warehouse(dag_run.dag_id, dag_run.run_id, first_poke_at, SOURCE_POKE_SECONDS)

    @task.branch(execution_timeout=timedelta(minutes=1))
    def extract_or_check(params=None) -> str:
        return "check_extraction" if params["dry_run"] else "extract"

    @task(execution_timeout=timedelta(minutes=10))
    def check_extraction(dag_run=None) -> dict[str, int]:
        from include.pacbook.pipeline import check_extraction_only

        return check_extraction_only(dag_run.dag_id, dag_run.run_id)

    @task(execution_timeout=timedelta(minutes=30))
    def extract(dag_run=None, params=None) -> dict[str, int]:
        from include.pacbook.pipeline import extract_source_to_staging

        return extract_source_to_staging(dag_run.run_id, *_interval(dag_run), full_refresh=params["full_refresh"])

    @task.sensor(
        poke_interval=60,
        timeout=config.landing_wait_seconds(),
        mode="reschedule",
        soft_fail=True,  # no new price list tonight is normal: skipped, not failed
        execution_timeout=timedelta(minutes=2),
    )
    def landing_files() -> bool:
        from include.pacbook.pipeline import landing_files_waiting

        return landing_files_waiting()

    @task(execution_timeout=timedelta(minutes=20), trigger_rule="none_failed")
    def ingest_landing_files(run_id=None, params=None) -> dict:
        from airflow.sdk.exceptions import AirflowSkipException

        from include.pacbook.pipeline import ingest_landing_files

        if params["dry_run"]:
            raise AirflowSkipException("dry run: landing files are not ingested")
        # Also after a skipped sensor: a file that arrived since, or a crashed load, is picked up.
        return ingest_landing_files(run_id)

    @task.branch(execution_timeout=timedelta(minutes=1))
    def whole_project_or_selection(params=None) -> str:
        return "dbt_selected" if params["dbt_select"].strip() else "staging"

    @task(execution_timeout=timedelta(minutes=30))
    def dbt_selected(params=None, dag_run=None) -> None:
        from include.pacbook.pipeline import build_selected_models

        snapshot_at = (dag_run.data_interval_end or dag_run.run_after).strftime("%Y-%m-%d %H:%M:%S")
        build_selected_models(params["dbt_select"].strip(), params["full_refresh"], snapshot_at, dag_run.run_id)

    @task(execution_timeout=timedelta(minutes=10), trigger_rule="none_failed_min_one_success")
    def forecast(dag_run=None) -> dict[str, float | None]:
        from include.pacbook.pipeline import forecast_sales

        return forecast_sales((dag_run.data_interval_end or dag_run.run_after).date())

    @task(execution_timeout=timedelta(minutes=10))
    def reconcile(run_id=None, dag_run=None, params=None) -> dict:
        from include.pacbook.pipeline import reconcile_with_source

        selected = bool(params["dbt_select"].strip())
        return reconcile_with_source(run_id, *_interval(dag_run), selected_rebuild=selected)

    @task(execution_timeout=timedelta(minutes=15))
    def export_marts(run_id=None, dag_run=None) -> dict[str, int]:
        from include.pacbook.pipeline import export_marts

        return export_marts(run_id, _interval(dag_run)[0].date())

    @task(execution_timeout=timedelta(minutes=15))
    def write_reports(run_id=None, dag_run=None) -> dict[str, str]:
        from include.pacbook.pipeline import write_reports

        return write_reports(run_id, _interval(dag_run)[0].date())

    @task(execution_timeout=timedelta(minutes=15))
    def publish_dbt_docs() -> str:
        from include.pacbook.pipeline import publish_dbt_docs

        return publish_dbt_docs()

    @task(execution_timeout=timedelta(minutes=5))
    def finish_run(dag_run=None) -> dict[str, dict[str, int]]:
        from include.pacbook.pipeline import finish_run

        return finish_run(dag_run.dag_id, dag_run.run_id)

    route_extract = source_ready() >> warehouse_free() >> extract_or_check()
    route_extract >> check_extraction()
    route_dbt = route_extract >> extract() >> landing_files() >> ingest_landing_files() >> whole_project_or_selection()
    marts = route_dbt >> dbt_layer("staging") >> dbt_layer("dwh") >> dbt_layer("marts")
    # Nothing is published before the numbers reconcile.
    published = [export_marts(), write_reports(), publish_dbt_docs()]
    [marts, route_dbt >> dbt_selected()] >> forecast() >> reconcile() >> published >> finish_run()


pacbook_warehouse()
