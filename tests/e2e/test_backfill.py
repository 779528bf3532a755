"""Backfills on real Airflow: three nights backfilled out of order, then one of them again, leave the
same warehouse, and it accounts for every source row.

The first backfill is the README's command line (`airflow backfill create ... --run-backwards`); the
second is the REST call behind the UI's backfill form. Both are run by the real scheduler.
The runs build the dbt project in one `dbt build` (trigger parameter `dbt_select`): what is under
test here is how nights and their data intervals load; the Cosmos rendering of the same project is
covered by the other end-to-end tests.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from include.pacbook import config
from include.pacbook.publisher_files import read_catalogue, write_publisher_files
from include.pacbook.source_generator import generate_source
from tests.conftest import query_all, query_one
from tests.e2e.conftest import warehouse_with_roles
from tests.e2e.test_pipeline_end_to_end import (
    assert_the_run_reconciled,
    assert_warehouse_reconciles_to_source,
    failed_tasks,
    task_states,
)
from tests.extract.test_incremental_extraction import NIGHTS, add_order, add_status
from tests.marts.test_incremental_facts import UNVERSIONED_SALES

pytestmark = pytest.mark.e2e

WHOLE_PROJECT = {"dbt_select": "fqn:*"}
# When a row was loaded or built, and encrypted personal data (a fresh ciphertext on every build),
# differ between two loads of the same data; everything else must be equal.
NOT_COMPARED = {
    "_pacbook_loaded_at",
    "loaded_at",
    "status_loaded_at",
    "sales_loaded_at",
    "built_at",
    "run_id",
    "ingested_at",
    "quarantined_at",
}


def warehouse_content(uri: str, leave_out: frozenset[str] = frozenset()) -> dict[str, tuple[int, str]]:
    """Per table of staging, dwh and marts: row count and a digest of its rows (sorted), without the
    load times, the snapshot's own bookkeeping, encrypted columns and the columns in ``leave_out``."""
    columns = query_all(
        uri,
        """
        select c.table_schema, c.table_name, c.column_name
        from information_schema.columns c
        join information_schema.tables t using (table_schema, table_name)
        where c.table_schema in ('staging', 'dwh', 'marts') and t.table_type = 'BASE TABLE'
          and c.data_type <> 'bytea' and c.table_name not like 'snap%%' and c.column_name not like 'dbt%%'
        order by 1, 2, c.ordinal_position
        """,
    )
    tables: dict[tuple[str, str], list[str]] = {}
    for schema, table, column in columns:
        if column not in NOT_COMPARED | leave_out:
            tables.setdefault((schema, table), []).append(column)
    content = {}
    with psycopg.connect(uri) as conn:
        for (schema, table), names in tables.items():
            row = sql.SQL("row({})::text").format(sql.SQL(", ").join(sql.Identifier(n) for n in names))
            digest = sql.SQL(
                "select count(*), md5(coalesce(string_agg(r, '|' order by r), '')) from (select {} as r from {}) as t"
            )
            content[f"{schema}.{table}"] = conn.execute(digest.format(row, sql.Identifier(schema, table))).fetchone()
    return content


# What records the nights on which changes were seen, which one clean run cannot reproduce: the
# versioned dimensions, the version keys, and the shipping cost of the version an order was sold
# with (a clean run charges every order the latest price) with the margins computed from it.
VERSIONED_DIMENSIONS = {"dwh.dim_customer", "dwh.dim_shipping_method"}
# One forecast per run date, kept: a history of runs, not a function of the source.
RUN_HISTORY_TABLES = {"marts.sales_forecast", "marts.sales_forecast_backtest"}
VERSION_DEPENDENT_COLUMNS = frozenset(
    {
        "customer_key",
        "shipping_method_key",
        "customer_versions_fingerprint",
        "shipping_cost_allocated",
        "order_shipping_cost",
        "shipping_cost",
        "average_shipping_cost",
        "gross_margin",
        "margin",
        "margin_pct",
    }
)


def assert_same_as_a_clean_run(airflow, postgres, warehouse: str) -> None:
    """Runs the DAG once more, on the same source, into an empty warehouse, and compares every table
    of dwh and marts and the staged source rows, leaving out what depends on the nights a change was
    seen (VERSION_DEPENDENT_COLUMNS). Its night is taken, so it is a manual run without a logical
    date, loading everything up to now; its own reconcile task compares it with the source."""
    clean = warehouse_with_roles(postgres, "warehouse_clean_run")
    airflow.set_connection(config.WAREHOUSE_CONN_ID, clean)
    try:
        clean_run = airflow.run_dag(config.DAG_ID, WHOLE_PROJECT, timeout=config.run_timeout_seconds())
    finally:
        airflow.set_connection(config.WAREHOUSE_CONN_ID, warehouse)
    assert clean_run["state"] == "success", failed_tasks(airflow, clean_run)
    assert_the_run_reconciled(airflow, clean_run)
    unversioned = f"select {UNVERSIONED_SALES} from dwh.fct_sales order by line_id"
    assert query_all(warehouse, unversioned) == query_all(clean, unversioned)
    ours = warehouse_content(warehouse, VERSION_DEPENDENT_COLUMNS)
    theirs = warehouse_content(clean, VERSION_DEPENDENT_COLUMNS)
    compared = {f"staging.{table}" for table in config.SOURCE_TABLES} | {
        name
        for name in theirs
        if name.startswith(("dwh.", "marts.")) and name not in VERSIONED_DIMENSIONS | RUN_HISTORY_TABLES
    }
    assert {"dwh.fct_order_fulfilment", "dwh.fct_customer_monthly", "marts.profitability"} <= compared
    differing = {name: (ours.get(name), theirs[name]) for name in sorted(compared) if ours.get(name) != theirs[name]}
    assert not differing, f"(rows, digest) here and in the clean run: {differing}"


@pytest.fixture
def backfill_source(postgres) -> str:
    """A generated shop with orders of our own on each backfilled night and a Returned status that
    reaches an old order on the middle night."""
    uri = postgres.fresh_database("source_backfill")
    generate_source(uri, scale=0.05, seed=41)
    with psycopg.connect(uri) as conn:
        for n, day in enumerate(NIGHTS):
            add_order(conn, 9_200_000 + n, dt.datetime.combine(day, dt.time(9 + n)), lines=n + 1)
        old_order = conn.execute("select min(order_id) from cust_order").fetchone()[0]
        add_status(conn, old_order, 6, dt.datetime.combine(NIGHTS[1], dt.time(18)))
    return uri


@pytest.fixture
def publisher_files(airflow, backfill_source):
    """Two publishers' price lists waiting in the stack's landing folder; removed after the test."""
    landing = Path(airflow.env["PACBOOK_LANDING_DIR"])
    landing.mkdir(parents=True, exist_ok=True)
    files = write_publisher_files(landing, read_catalogue(backfill_source), NIGHTS[0], publishers=2, seed=5)
    yield files
    for generated in files:
        generated.path.unlink(missing_ok=True)


def test_three_nights_backfilled_out_of_order_then_one_again_leave_the_same_warehouse(
    airflow, postgres, backfill_source, publisher_files
):
    warehouse = warehouse_with_roles(postgres, "warehouse_backfill", source=backfill_source)
    airflow.set_connection(config.SOURCE_CONN_ID, backfill_source)
    airflow.set_connection(config.WAREHOUSE_CONN_ID, warehouse)
    first, last = (f"{day:%Y-%m-%d}" for day in (NIGHTS[0], NIGHTS[-1]))

    # Out of order, from an empty warehouse: the last night first, with the README's command.
    backwards = airflow.backfill(config.DAG_ID, first, last, WHOLE_PROJECT, run_backwards=True, use_cli=True)
    assert [run["logical_date"][:10] for run in backwards] == [last, f"{NIGHTS[1]:%Y-%m-%d}", first]
    for run in backwards:
        assert run["state"] == "success", failed_tasks(airflow, run)
        assert run["run_type"] == "backfill"
        assert run["conf"] == WHOLE_PROJECT
        assert_the_run_reconciled(airflow, run)
    # The first run met the publishers' files and ingested them; the later nights had none waiting.
    assert [task_states(airflow, run)["landing_files"] for run in backwards] == ["success", "skipped", "skipped"]
    assert query_one(warehouse, "select count(*) from audit.landing_file")[0] == len(publisher_files)
    # Each night's extraction worked on its own interval: the first loaded everything up to its end,
    # the earlier nights took their own rows again.
    modes = query_all(
        warehouse,
        "select run_id, load_mode from audit.extract_load where table_name = 'cust_order' order by finished_at",
    )
    assert [mode for _, mode in modes] == ["full", "increment", "increment"]
    assert_warehouse_reconciles_to_source(backfill_source, warehouse)
    after_backwards = warehouse_content(warehouse)
    assert after_backwards["dwh.fct_sales"][0] == query_one(backfill_source, "select count(*) from order_line")[0]

    # The middle night (its own order and the late Returned) again, through the REST call of the UI's
    # backfill form: the same interval run twice changes nothing. (One night, not three: each run
    # costs the suite ~45 s, and the three-night backfill above already crosses nights.)
    middle = f"{NIGHTS[1]:%Y-%m-%d}"
    again = airflow.backfill(config.DAG_ID, middle, middle, WHOLE_PROJECT, reprocess="completed")
    assert [run["logical_date"][:10] for run in again] == [middle]
    assert all(run["state"] == "success" for run in again), [failed_tasks(airflow, run) for run in again]
    assert_the_run_reconciled(airflow, again[0])
    assert warehouse_content(warehouse) == after_backwards
    assert query_one(warehouse, "select count(*) from audit.landing_file")[0] == len(publisher_files)

    # Nights backfilled out of order end where one clean run ends; so does a full refresh after them.
    assert_same_as_a_clean_run(airflow, postgres, warehouse)
    refreshed = airflow.run_dag(config.DAG_ID, {**WHOLE_PROJECT, "full_refresh": True})
    assert refreshed["state"] == "success", failed_tasks(airflow, refreshed)
    assert_the_run_reconciled(airflow, refreshed)
    assert query_all(
        warehouse, "select distinct load_mode from audit.extract_load where run_id = %s", (refreshed["dag_run_id"],)
    ) == [("full",)]
    # The snapshots keep their versions through a full refresh: every model rebuilt from them and from
    # staging is what the increments had built, versions and their keys included.
    refreshed_content = warehouse_content(warehouse)
    rebuilt = {
        name for name in after_backwards if name.startswith(("dwh.", "marts.")) and name not in RUN_HISTORY_TABLES
    }
    assert {"dwh.fct_customer_monthly", "dwh.dim_customer", "marts.profitability"} <= rebuilt
    assert {name: refreshed_content.get(name) for name in sorted(rebuilt)} == {
        name: after_backwards[name] for name in sorted(rebuilt)
    }
