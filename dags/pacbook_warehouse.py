"""
### PacBook warehouse — the nightly run

`source_ready` (sensor) → `extract` (Luigi: 15 source tables → `staging`, streamed by COPY)
→ dbt via Cosmos: `staging` → `dwh` (snapshots, dimensions, facts) → `marts`
→ `forecast` (6 months of revenue and quantity, with its backtest).

Each dbt task builds one model and runs its tests. Connections: `pacbook_source`,
`pacbook_warehouse`. Runbook: `RUNBOOK.md` in the repository.
"""

from datetime import timedelta

import pendulum
from airflow.sdk import CronDataIntervalTimetable, dag, task

from include.pacbook import config
from include.pacbook.dbt_groups import dbt_layer

DEFAULT_ARGS = {
    "owner": "data-platform",
    "retries": 2,
    "retry_delay": timedelta(seconds=config.retry_delay_seconds()),
    "retry_exponential_backoff": True,
    "max_retry_delay": timedelta(minutes=10),
    "execution_timeout": timedelta(minutes=20),
}


@dag(
    dag_id=config.DAG_ID,
    # A data-interval timetable, so the run for 2025-03-10 covers 2025-03-10 and backfills are exact.
    schedule=CronDataIntervalTimetable(config.nightly_schedule(), timezone="UTC"),
    start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=["pacbook", "warehouse", "dbt", "luigi"],
    doc_md=__doc__,
)
def pacbook_warehouse():
    @task.sensor(
        poke_interval=30, timeout=timedelta(hours=2), mode="reschedule", execution_timeout=timedelta(minutes=2)
    )
    def source_ready() -> bool:
        from include.pacbook.pipeline import wait_for_source

        return wait_for_source()

    @task(execution_timeout=timedelta(minutes=30))
    def extract(run_id: str | None = None) -> dict[str, int]:
        from include.pacbook.pipeline import extract_source_to_staging

        return extract_source_to_staging(run_id)

    @task(execution_timeout=timedelta(minutes=10))
    def forecast(dag_run=None) -> dict[str, float]:
        from include.pacbook.pipeline import forecast_sales

        run_date = (dag_run.data_interval_end or dag_run.run_after).date()
        return forecast_sales(run_date)

    (source_ready() >> extract() >> dbt_layer("staging") >> dbt_layer("dwh") >> dbt_layer("marts") >> forecast())


pacbook_warehouse()
