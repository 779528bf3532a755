"""State-aware builds (include/pacbook/build_state.py) on real dbt and real PostgreSQL.

A night that brings only new orders rebuilds the order models and what reads them, leaves the
dimensions of tables nobody touched as they are, and ends with the same marts as a warehouse built
from scratch on the same source. Whatever writes a staging table (an engineer's fix included), a
changed model or a dropped table makes the next build rebuild what depends on it; nothing else does.
"""

from __future__ import annotations

import datetime as dt

import psycopg
import pytest

from include.luigi_tasks.extract_source import extract_source
from include.pacbook import build_state
from include.pacbook.dbt_cli import build_changed, changed_selection
from include.pacbook.pipeline import reconcile_with_source
from include.pacbook.source_generator import generate_source
from tests.conftest import query_all, query_one
from tests.extract.test_incremental_extraction import AS_OF, NIGHTS, add_order, night

MARTS = (
    "monthly_sales",
    "book_sales_monthly",
    "daily_sales",
    "customer_segments",
    "customer_repeat_orders",
    "profitability",
    "top_books",
)
ORDER_MODELS = {"stg_pacbook__cust_order", "int_orders_latest_status", "fct_sales", "fct_order_fulfilment"}
BOOK_MODELS = {"stg_pacbook__book", "int_books_authors_listed", "dim_book", "bridge_book_author"}


def snapshot_at(day: dt.date) -> str:
    return night(day)[1].strftime("%Y-%m-%d %H:%M:%S")


def decisions(warehouse: str) -> dict[str, build_state.Decision]:
    nodes = build_state.manifest_nodes()
    with psycopg.connect(warehouse) as conn:
        state = build_state.read_state(conn, nodes.values())
    return {nodes[uid].name: decision for uid, decision in build_state.plan(nodes, state).items()}


def rebuilt(warehouse: str) -> set[str]:
    return {name for name, decision in decisions(warehouse).items() if decision.rebuild}


def mart_fingerprints(warehouse: str) -> dict[str, tuple]:
    return {
        mart: query_one(
            warehouse, f"select count(*), md5(string_agg(t::text, '|' order by t::text)) from marts.{mart} t"
        )
        for mart in MARTS
    }


@pytest.fixture
def source(postgres) -> str:
    uri = postgres.fresh_database("source_state_aware")
    generate_source(uri, scale=0.05, seed=47)
    return uri


def test_a_night_of_new_orders_rebuilds_the_order_models_only_and_ends_as_a_full_build(postgres, source, monkeypatch):
    warehouse = postgres.fresh_database("warehouse_state_aware")
    monkeypatch.setenv("AIRFLOW_CONN_PACBOOK_SOURCE", source)
    monkeypatch.setenv("AIRFLOW_CONN_PACBOOK_WAREHOUSE", warehouse)
    extract_source("night_1", interval=night(NIGHTS[0]), as_of=AS_OF)
    first = build_changed(warehouse, "night_1", snapshot_at(NIGHTS[0]))
    nodes = len(build_state.manifest_nodes())
    assert first == {"rebuilt": nodes, "up_to_date": 0}
    assert query_one(warehouse, "select count(*) from audit.dbt_node_build where run_id = 'night_1'") == (nodes,)
    # Straight after a build nothing has changed: no dbt at all.
    assert changed_selection(warehouse) == (None, {"rebuilt": 0, "up_to_date": nodes})

    # Night 2: only new orders.
    with psycopg.connect(source) as conn:
        add_order(conn, 9_100_000, dt.datetime.combine(NIGHTS[1], dt.time(9, 15)))
    extract_source("night_2", interval=night(NIGHTS[1]), as_of=AS_OF)
    plan = decisions(warehouse)
    stale = {name for name, decision in plan.items() if decision.rebuild}
    assert stale >= ORDER_MODELS | set(MARTS)
    assert not stale & BOOK_MODELS, "the books did not change"
    assert not stale & {"snap_pacbook__customers", "dim_customer", "dim_shipping_method", "publisher_cost_rates"}
    assert "staging.cust_order at" in plan["stg_pacbook__cust_order"].reason
    assert plan["dim_book"].reason.startswith("up to date: built at")
    # A dbt_select run that left these models behind staging is not reconciled; its log names them.
    [why] = reconcile_with_source("night_2", *night(NIGHTS[1]), selected_rebuild=True).values()
    assert f"left {len(stale)} models behind staging" in why
    assert "stg_pacbook__cust_order: changed since its last build at" in why
    second = build_changed(warehouse, "night_2", snapshot_at(NIGHTS[1]))
    assert second == {"rebuilt": len(stale), "up_to_date": nodes - len(stale)}
    # Once nothing lags staging, a dbt_select run is reconciled like any other.
    compared = reconcile_with_source("night_2", *night(NIGHTS[1]), selected_rebuild=True)
    assert (
        len(compared) == 6
        and int(compared[f"orders [interval {NIGHTS[1]:%Y-%m-%d} 00:00 to {NIGHTS[2]:%Y-%m-%d} 00:00]"]) >= 1
    )
    assert query_one(warehouse, "select count(*) from dwh.fct_sales where order_id = 9100000")[0] == 2
    assert query_one(
        warehouse, "select run_id from audit.dbt_node_build where unique_id = 'model.pacbook.dim_book'"
    ) == ("night_1",)

    # The same source loaded whole and built from scratch: the same marts.
    full = postgres.fresh_database("warehouse_state_aware_full")
    monkeypatch.setenv("AIRFLOW_CONN_PACBOOK_WAREHOUSE", full)
    extract_source("full", interval=night(NIGHTS[1]), as_of=AS_OF)
    build_changed(full, "full", snapshot_at(NIGHTS[1]), full_refresh=True)
    assert mart_fingerprints(warehouse) == mart_fingerprints(full)


def test_any_write_to_staging_a_changed_model_or_a_lost_table_rebuilds_what_depends_on_it(
    postgres, source, monkeypatch
):
    warehouse = postgres.fresh_database("warehouse_state_aware_changes")
    monkeypatch.setenv("AIRFLOW_CONN_PACBOOK_SOURCE", source)
    monkeypatch.setenv("AIRFLOW_CONN_PACBOOK_WAREHOUSE", warehouse)
    extract_source("night_1", interval=night(NIGHTS[0]), as_of=AS_OF)
    build_changed(warehouse, "night_1", snapshot_at(NIGHTS[0]))
    assert not rebuilt(warehouse)

    with psycopg.connect(warehouse) as conn:
        # statements that change no row change nothing (validation runs such deletes every night)
        conn.execute("delete from staging.author where false")
        conn.execute("update staging.publisher set publisher_name = publisher_name where false")
    assert not rebuilt(warehouse)

    with psycopg.connect(warehouse) as conn:  # an engineer corrects a title by hand
        conn.execute(
            "update staging.book set title = title || ' (2nd ed.)' "
            "where book_id = (select min(book_id) from staging.book)"
        )
    plan = decisions(warehouse)
    stale = {name for name, decision in plan.items() if decision.rebuild}
    assert stale >= BOOK_MODELS | {"fct_sales", "top_books"}
    assert not stale & {"stg_pacbook__cust_order", "int_orders_latest_status", "dim_customer", "dim_date"}
    assert "staging.book at" in plan["stg_pacbook__book"].reason
    assert plan["dim_book"].reason == "stg_pacbook__book is rebuilt before it"
    build_changed(warehouse, "fix", snapshot_at(NIGHTS[0]))
    assert query_one(warehouse, "select count(*) from dwh.dim_book where strpos(title, '(2nd ed.)') > 0") == (1,)
    assert not rebuilt(warehouse)

    # A deploy that changes a model's code, and a mart dropped by hand.
    with psycopg.connect(warehouse) as conn:
        conn.execute(
            "update audit.dbt_node_build set fingerprint = 'older code' where unique_id = 'model.pacbook.dim_geography'"
        )
        conn.execute("drop table marts.monthly_sales")
    plan = decisions(warehouse)
    assert plan["dim_geography"].reason == "its code, configuration or macros changed since its last build"
    assert plan["monthly_sales"].reason == "marts.monthly_sales does not exist"
    assert {"dim_geography", "fct_sales", "profitability", "monthly_sales"} <= rebuilt(warehouse)
    assert not rebuilt(warehouse) & {"dim_book", "dim_customer", "stg_pacbook__address"}
    assert not any(decision.full_refresh for decision in plan.values())
    assert changed_selection(warehouse)[0][0] == "--select"
    # A deploy that changes an incremental model: its old rows were built by the old code.
    with psycopg.connect(warehouse) as conn:
        conn.execute(
            "update audit.dbt_node_build set fingerprint = 'older code' "
            "where unique_id = 'model.pacbook.fct_customer_monthly'"
        )
    plan = decisions(warehouse)
    assert plan["fct_customer_monthly"].full_refresh
    assert plan["fct_customer_monthly"].reason.endswith("every row is rebuilt")
    assert changed_selection(warehouse)[0][0] == "--full-refresh"
    assert query_all(warehouse, "select table_name from audit.staging_change order by 1") == [
        (table,) for table in sorted({*build_state_tables()})
    ]


def build_state_tables() -> set[str]:
    return {table for node in build_state.manifest_nodes().values() for table in node.staging_tables}
