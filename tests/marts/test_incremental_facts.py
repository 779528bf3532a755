"""The incremental order facts (fct_sales, fct_order_fulfilment) on real dbt and real PostgreSQL.

Two nights are loaded by increments and built incrementally; a second warehouse loads the same
source in one go and builds everything from scratch. The facts must be equal row for row, the
late status must restate its old order, and the orders nobody touched must not be rebuilt.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import psycopg
import pytest

from include.luigi_tasks.extract_source import extract_source
from include.pacbook.source_generator import generate_source
from tests.conftest import query_all, query_one
from tests.extract.test_incremental_extraction import AS_OF, NIGHTS, add_order, add_status, night
from tests.marts.test_dbt_build import run_dbt_cli

# Every column but loaded_at, which says when a row was built and so differs between the warehouses.
FACT_COLUMNS = {
    "fct_sales": "order_id, line_id, book_key, customer_key, date_key, shipping_method_key, geography_key, "
    "order_status_key, sales_amount, net_sales_amount, shipping_cost_allocated, latest_order_status",
    "fct_order_fulfilment": "order_id, customer_key, received_at, delivered_at, cancelled_at, returned_at, "
    "latest_order_status, status_event_count, is_net_revenue, order_line_count, order_amount, shipping_cost, "
    "sequence_issue",
}
FACT_KEYS = {"fct_sales": "line_id", "fct_order_fulfilment": "order_id"}
RETURNED = 6  # order_status.status_id of Returned in the generated source


@pytest.fixture
def source(postgres) -> str:
    uri = postgres.fresh_database("source_incremental_facts")
    generate_source(uri, scale=0.05, seed=31)
    with psycopg.connect(uri) as conn:
        add_order(conn, 9_000_000, dt.datetime.combine(NIGHTS[0], dt.time(10, 30)))
    return uri


def build_facts(warehouse: str, target: Path, day: dt.date, *extra: str) -> dict[str, int]:
    """Builds the facts and what they read (no tests: test_dbt_build runs those); returns rows inserted per model."""
    snapshot_at = night(day)[1].strftime("%Y-%m-%d %H:%M:%S")
    result = run_dbt_cli(
        warehouse,
        target,
        "build",
        "--select",
        "+fct_order_fulfilment",
        "--exclude-resource-type",
        "test",
        "unit_test",
        "--vars",
        json.dumps({"snapshot_at": snapshot_at}),
        *extra,
    )
    assert result.returncode == 0, result.stdout[-5000:]
    results = json.loads((target / "run_results.json").read_text())["results"]
    return {
        r["unique_id"].split(".")[-1]: r["adapter_response"].get("rows_affected")
        for r in results
        if r["unique_id"].split(".")[-1] in FACT_COLUMNS
    }


def fact_rows(warehouse: str, model: str) -> list[tuple]:
    return query_all(warehouse, f"select {FACT_COLUMNS[model]} from dwh.{model} order by {FACT_KEYS[model]}")


def test_nightly_increments_build_the_same_facts_as_a_full_rebuild(postgres, source, monkeypatch, tmp_path):
    incremental = postgres.fresh_database("warehouse_incremental_facts")
    monkeypatch.setenv("AIRFLOW_CONN_PACBOOK_SOURCE", source)
    monkeypatch.setenv("AIRFLOW_CONN_PACBOOK_WAREHOUSE", incremental)
    extract_source("night_1", interval=night(NIGHTS[0]), as_of=AS_OF)
    build_facts(incremental, tmp_path / "night_1", NIGHTS[0])
    untouched = query_one(incremental, "select min(order_id) from dwh.fct_sales where is_net_revenue")[0]
    # an order two months old: its own statuses are all in the past, the Returned below is its latest
    old_order = query_one(
        incremental,
        "select max(order_id) from dwh.fct_sales where is_net_revenue and order_date < %s",
        (NIGHTS[0] - dt.timedelta(days=60),),
    )[0]
    built_at = query_all(incremental, "select line_id, loaded_at from dwh.fct_sales where order_id = %s", (untouched,))

    # The second night: a new order with two lines, and a Returned status on an old order.
    with psycopg.connect(source) as conn:
        add_order(conn, 9_000_001, dt.datetime.combine(NIGHTS[1], dt.time(11)))
        add_status(conn, old_order, RETURNED, dt.datetime.combine(NIGHTS[1], dt.time(15)))
    extract_source("night_2", interval=night(NIGHTS[1]), as_of=AS_OF)
    inserted = build_facts(incremental, tmp_path / "night_2", NIGHTS[1])

    # Only the orders of the night (ours and the generator's) and the restated one were rebuilt.
    start, end = (moment.replace(tzinfo=None) for moment in night(NIGHTS[1]))
    touched = query_one(
        source,
        """
        with touched as (
            select order_id from cust_order where order_date >= %(start)s and order_date < %(end)s
            union
            select order_id from order_history where status_date >= %(start)s and status_date < %(end)s
        )
        select count(*), (select count(*) from order_line where order_id in (select order_id from touched))
        from touched
        """,
        {"start": start, "end": end},
    )
    assert touched[0] >= 2
    assert inserted == {"fct_order_fulfilment": touched[0], "fct_sales": touched[1]}
    assert (
        query_all(incremental, "select line_id, loaded_at from dwh.fct_sales where order_id = %s", (untouched,))
        == built_at
    )
    # The late Returned status restated the old order: its lines no longer count as net revenue.
    assert query_all(
        incremental,
        "select distinct latest_order_status, net_sales_amount from dwh.fct_sales where order_id = %s",
        (old_order,),
    ) == [("Returned", 0)]

    # The same source, loaded whole and built from scratch, gives the same facts.
    full = postgres.fresh_database("warehouse_full_facts")
    monkeypatch.setenv("AIRFLOW_CONN_PACBOOK_WAREHOUSE", full)
    extract_source("full", interval=night(NIGHTS[1]), as_of=AS_OF)
    build_facts(full, tmp_path / "full", NIGHTS[1], "--full-refresh")
    for model in FACT_COLUMNS:
        assert fact_rows(incremental, model) == fact_rows(full, model), model
    assert query_one(incremental, "select count(*), sum(sales_amount) from dwh.fct_sales") == query_one(
        source,
        "select count(*), sum(price) from order_line join cust_order using (order_id) where order_date < %s",
        (night(NIGHTS[1])[1].replace(tzinfo=None),),
    )

    # A full refresh after the increments rebuilds every row, to the same facts.
    monkeypatch.setenv("AIRFLOW_CONN_PACBOOK_WAREHOUSE", incremental)
    rebuilt = build_facts(incremental, tmp_path / "refresh", NIGHTS[1], "--full-refresh")
    assert rebuilt["fct_sales"] == len(fact_rows(full, "fct_sales"))
    for model in FACT_COLUMNS:
        assert fact_rows(incremental, model) == fact_rows(full, model), model
