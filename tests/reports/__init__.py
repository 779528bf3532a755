"""Files out: the Parquet/DuckDB export of the marts, the daily and month-end reports, the dbt docs site."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import PostgresForTests, query_one


@dataclass(frozen=True)
class BuiltWarehouse:
    uri: str
    source_uri: str
    month_end: dt.date  # the last complete month of the data ends here
    forecast_run: dt.date  # the forecast written by the run for that night (its interval ends a day later)


def build_warehouse(postgres: PostgresForTests, source_uri: str, target_dir: Path) -> BuiltWarehouse:
    """A warehouse built the way the nightly run builds it: extract, dbt build, forecast."""
    from include.luigi_tasks.extract_source import extract_source
    from include.pacbook.forecast import write_sales_forecast
    from tests.marts.test_dbt_build import dbt_build

    uri = postgres.fresh_database("warehouse_files_out")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AIRFLOW_CONN_PACBOOK_SOURCE", source_uri)
        patch.setenv("AIRFLOW_CONN_PACBOOK_WAREHOUSE", uri)
        extract_source("files_out_build")
    dbt_build(uri, target_dir)
    # The last month whose every day is in the data: the one before the month of the latest order.
    (month_end,) = query_one(
        uri, "select (date_trunc('month', max(order_date)) - interval '1 day')::date from dwh.fct_sales"
    )
    forecast_run = month_end + dt.timedelta(days=1)
    write_sales_forecast(uri, forecast_run)
    return BuiltWarehouse(uri=uri, source_uri=source_uri, month_end=month_end, forecast_run=forecast_run)
