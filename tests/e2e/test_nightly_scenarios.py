"""A second night on real Airflow, with real changes in the shop, whose extraction and dbt build are
both killed half-way: the scheduler retries them, and the warehouse ends where a clean full run on
the same source ends.

The first night loads the shop. Before the second night a customer changes email and moves, a
shipping method gets dearer, an old order is Returned late and new orders arrive. The second night's
extraction is killed (SIGKILL, the task's whole process tree) once the night's order lines have
streamed into the warehouse and before they replace the staged ones, and its dbt build while it
writes fct_sales: each held there by a lock this test takes, so the kill lands mid-copy and
mid-build every time. The runs build the dbt project in one `dbt build`
(trigger parameter `dbt_select`), as in test_backfill.py.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import time

import psutil
import psycopg
import pytest

from include.pacbook import config
from include.pacbook.source_generator import generate_source
from tests.conftest import query_all, query_one
from tests.e2e.conftest import warehouse_with_roles
from tests.e2e.test_backfill import WHOLE_PROJECT, assert_same_as_a_clean_run
from tests.e2e.test_pipeline_end_to_end import (
    assert_the_run_reconciled,
    assert_warehouse_reconciles_to_source,
    failed_tasks,
)
from tests.extract.test_incremental_extraction import add_order
from tests.marts.test_incremental_facts import assert_restated_as_returned, change_the_shop

pytestmark = pytest.mark.e2e

# Nights of their own (test_backfill.py runs the generator's last three nights on the same stack).
FIRST_NIGHT, SECOND_NIGHT = dt.date(2024, 3, 27), dt.date(2024, 3, 28)
FIRST_ORDER, SECOND_NIGHT_ORDER = 9_300_000, 9_300_001


@pytest.fixture
def shop(postgres) -> str:
    uri = postgres.fresh_database("source_scenarios")
    generate_source(uri, scale=0.05, seed=53)
    with psycopg.connect(uri) as conn:
        add_order(conn, FIRST_ORDER, dt.datetime.combine(FIRST_NIGHT, dt.time(10)))
    return uri


def kill_task_waiting_on(uri: str, statement: str, timeout: float = 300) -> None:
    """Waits until a query like ``statement`` waits for a lock in database ``uri``, then SIGKILLs
    the Airflow task that runs it: the process holding the connection (a Luigi worker, the dbt CLI)
    and its parent, the task process, with all of its children."""
    deadline = time.monotonic() + timeout
    while not (
        found := query_one(
            uri,
            "select client_port from pg_stat_activity where wait_event_type = 'Lock' and query ilike %s",
            (statement,),
        )
    ):
        assert time.monotonic() < deadline, f"no task reached {statement!r} within {timeout:.0f} s"
        time.sleep(0.3)
    holder = next(c.pid for c in psutil.net_connections("tcp") if c.laddr and c.laddr.port == found[0] and c.pid)
    task_process = psutil.Process(holder).parent()
    victims = [task_process, *task_process.children(recursive=True)]
    for victim in victims:
        with contextlib.suppress(psutil.NoSuchProcess):  # a child may die with its parent first
            victim.kill()
    psutil.wait_procs(victims, timeout=30)


def try_numbers(airflow, run_id: str) -> dict[str, int]:
    return {ti["task_id"]: ti["try_number"] for ti in airflow.task_instances(config.DAG_ID, run_id)}


def test_a_second_night_with_changes_survives_killed_extraction_and_build_and_equals_a_clean_run(
    airflow, postgres, shop
):
    warehouse = warehouse_with_roles(postgres, "warehouse_scenarios", source=shop)
    airflow.set_connection(config.SOURCE_CONN_ID, shop)
    airflow.set_connection(config.WAREHOUSE_CONN_ID, warehouse)
    first = f"{FIRST_NIGHT:%Y-%m-%d}"
    [night_1] = airflow.backfill(config.DAG_ID, first, first, WHOLE_PROJECT)
    assert night_1["state"] == "success", failed_tasks(airflow, night_1)
    assert_the_run_reconciled(airflow, night_1)

    customer, method = query_one(
        shop, "select customer_id, shipping_method_id from cust_order where order_id = %s", (FIRST_ORDER,)
    )
    customer_facts = query_all(
        warehouse,
        "select line_id, customer_key from dwh.fct_sales where customer_id = %s order by line_id",
        (customer,),
    )
    old_order = query_one(
        warehouse,
        "select max(order_id) from dwh.fct_sales where is_net_revenue and order_date < %s",
        (FIRST_NIGHT - dt.timedelta(days=60),),
    )[0]
    with psycopg.connect(shop) as conn:
        old_cost = change_the_shop(conn, customer, method, old_order, SECOND_NIGHT)
        add_order(conn, SECOND_NIGHT_ORDER, dt.datetime.combine(SECOND_NIGHT, dt.time(11)))  # the same customer

    # The second night, held mid-copy and mid-build by locks, killed there, retried by the scheduler.
    start, end = (f"{day:%Y-%m-%d}T00:00:00Z" for day in (SECOND_NIGHT, SECOND_NIGHT + dt.timedelta(days=1)))
    airflow.take_due_night(config.DAG_ID)
    with psycopg.connect(warehouse) as staging_lock, psycopg.connect(warehouse) as warehouse_lock:
        staging_lock.execute("lock table staging.order_line in exclusive mode")  # reads pass, writes wait
        warehouse_lock.execute("lock table dwh.fct_sales in access exclusive mode")
        night_2 = airflow.trigger(config.DAG_ID, WHOLE_PROJECT, logical_date=start, data_interval=(start, end))
        airflow.set_paused(config.DAG_ID, False)
        try:
            # Its order lines streamed into the warehouse, not yet in place of the staged ones.
            kill_task_waiting_on(warehouse, "%delete from%staging%order_line%pacbook_incoming%")
            # Killed, nothing could record an end: the audit shows a run started and not finished.
            assert query_one(
                warehouse,
                "select status, finished_at from audit.pipeline_run where run_id = %s",
                (night_2["dag_run_id"],),
            ) == ("running", None)
            staging_lock.rollback()
            kill_task_waiting_on(warehouse, "%fct_sales%")
            warehouse_lock.rollback()
            night_2 = airflow.wait_for_run(config.DAG_ID, night_2["dag_run_id"], timeout=config.run_timeout_seconds())
        finally:
            airflow.set_paused(config.DAG_ID, True)
    assert night_2["state"] == "success", failed_tasks(airflow, night_2)
    tries = try_numbers(airflow, night_2["dag_run_id"])
    assert (tries["extract"], tries["dbt_selected"]) == (2, 2)
    assert_the_run_reconciled(airflow, night_2)
    status, finished, written, by_table = query_one(
        warehouse,
        "select status, finished_at, rows_written, rows_by_table from audit.pipeline_run where run_id = %s",
        (night_2["dag_run_id"],),
    )
    assert status == "success" and finished is not None
    assert written == sum(counts["written"] for counts in by_table.values()) and by_table["order_line"]["written"] > 0
    # The killed copy left nothing behind: the rerun skipped the tables already loaded, loaded the rest once.
    assert query_one(warehouse, "select count(*) from audit.extract_load where run_id = %s", (night_2["dag_run_id"],))[
        0
    ] == len(config.SOURCE_TABLES)
    assert_warehouse_reconciles_to_source(shop, warehouse)

    # SCD2: the customer's and the shipping method's new versions start at the end of the night that
    # saw the change; the old facts keep the versions they were sold with, and so does the order the
    # customer placed during that night, before the change was seen.
    night_end = dt.datetime.combine(SECOND_NIGHT + dt.timedelta(days=1), dt.time())
    versions = query_all(
        warehouse,
        "select valid_from, is_current, city from dwh.dim_customer where customer_id = %s order by valid_from",
        (customer,),
    )
    assert [(v[0] == night_end, v[1]) for v in versions] == [(False, False), (True, True)]
    assert versions[1][2] == "Newtown"
    assert query_one(warehouse, "select count(*) from dwh.dim_shipping_method where method_id = %s", (method,))[0] == 2
    lines = [line for line, _ in customer_facts]
    assert (
        query_all(
            warehouse,
            "select line_id, customer_key from dwh.fct_sales where line_id = any(%s) order by line_id",
            (lines,),
        )
        == customer_facts
    )
    new_order = query_one(
        warehouse,
        "select c.is_current, f.order_shipping_cost from dwh.fct_sales f join dwh.dim_customer c using (customer_key) "
        "where f.order_id = %s limit 1",
        (SECOND_NIGHT_ORDER,),
    )
    assert new_order == (False, old_cost)
    assert_restated_as_returned(warehouse, old_order)

    assert_same_as_a_clean_run(airflow, postgres, warehouse)
