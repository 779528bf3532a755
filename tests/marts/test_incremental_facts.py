"""The incremental order facts (fct_sales, fct_order_fulfilment) on real dbt and real PostgreSQL.

Two nights are loaded by increments and built incrementally; a second warehouse loads the same
source in one go and builds everything from scratch. The facts must be equal row for row, the
late status must restate its old order, and the orders nobody touched must not be rebuilt.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import psycopg
import pytest

from include.luigi_tasks.extract_source import extract_source
from include.pacbook.dbt_cli import DbtCommandError, dbt_command, dbt_env, run_dbt, warehouse_clock
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


def assert_restated_as_returned(warehouse: str, order_id: int) -> None:
    """The order's lines carry its late Returned status and no longer count as net revenue."""
    assert query_all(
        warehouse,
        "select distinct latest_order_status, net_sales_amount from dwh.fct_sales where order_id = %s",
        (order_id,),
    ) == [("Returned", 0)]


def failed_tests(warehouse: str, target: Path, *extra: str, model: str = "fct_sales") -> dict[str, int]:
    """Runs the data tests of the model; the failing rows of each test that failed."""
    result = run_dbt_cli(warehouse, target, "test", "--select", f"{model},test_type:data", *extra)
    results = json.loads((target / "run_results.json").read_text())["results"]
    assert results and all(r["status"] in ("pass", "fail", "warn") for r in results), result.stdout[-3000:]
    return {r["unique_id"].split(".")[2]: r["failures"] for r in results if r["status"] == "fail"}


def assert_fact_tests_check_recent_builds(
    warehouse: str, target: Path, night_2_started: dt.datetime, untouched_order: int, restated_order: int
) -> None:
    """The facts' data tests check every row until a build passed; then the rows built since the start
    of the last build that passed, as recorded by the nightly run: a broken row of night 1 is caught
    before night 2 is recorded as passed, and not after; a broken row of night 2 is caught."""
    unknown_book = "relationships_fct_sales_book_key__book_key__ref_dim_book_"
    broken = []

    def break_a_line(order_id: int) -> None:
        with psycopg.connect(warehouse) as conn:
            line = conn.execute(
                "select line_id, book_key from dwh.fct_sales where order_id = %s order by line_id limit 1", (order_id,)
            ).fetchone()
            conn.execute("update dwh.fct_sales set book_key = 'no such book' where line_id = %s", (line[0],))
        broken.append(line)

    try:
        break_a_line(untouched_order)
        assert failed_tests(warehouse, target) == {unknown_book: 1}  # no build recorded: every row
        with psycopg.connect(warehouse) as conn:
            conn.execute(
                "select audit.record_dbt_build('model.pacbook.fct_sales', 'as the nightly run records it', %s, 'n2')",
                (night_2_started,),
            )
        assert failed_tests(warehouse, target) == {}  # night 1's rows are out of the scope
        compiled = next((target / "compiled").rglob(f"{unknown_book}*.sql")).read_text()
        assert f"built_at >= '{night_2_started.isoformat()}'::timestamptz" in compiled, compiled
        break_a_line(restated_order)
        assert failed_tests(warehouse, target) == {unknown_book: 1}
        assert failed_tests(warehouse, target, "--vars", json.dumps({"test_every_row": True})) == {unknown_book: 2}
        # A night whose fact tests fail, run as the nightly CLI path runs it, is not recorded as passed:
        # the broken row stays under the next night's tests.
        with pytest.raises(DbtCommandError, match=unknown_book):
            run_dbt("build", "--select", "fct_sales", warehouse_uri=warehouse, record_as_run="night_3")
        assert query_one(
            warehouse, "select built_at from audit.dbt_node_build where unique_id = 'model.pacbook.fct_sales'"
        ) == (night_2_started,)
        assert failed_tests(warehouse, target) == {unknown_book: 1}
    finally:
        with psycopg.connect(warehouse) as conn:
            for line_id, book_key in broken:
                conn.execute("update dwh.fct_sales set book_key = %s where line_id = %s", (book_key, line_id))


def assert_staging_key_tests_check_recent_loads(warehouse: str, target: Path, night_2_started: dt.datetime) -> None:
    """The key tests of a growing table's staging view check the rows loaded since the start of the
    view's last passed build; its relationships tests every row (in the DAG they run after the view
    has recorded tonight's build)."""
    duplicate, orphan = (
        "unique_stg_pacbook__order_line_line_id",
        "relationships_stg_pacbook__order_line_book_id__book_id__ref_stg_pacbook__book_",
    )
    view = "stg_pacbook__order_line"
    with psycopg.connect(warehouse) as conn:
        order_id = conn.execute("select min(order_id) from staging.order_line").fetchone()[0]
        # Two rows with one new key and an unknown book, loaded before night 2's build.
        conn.execute(
            "insert into staging.order_line (line_id, order_id, book_id, price, _pacbook_loaded_at) "
            "select -1, %s, -1, 1.00, %s from generate_series(1, 2)",
            (order_id, night_2_started - dt.timedelta(hours=1)),
        )
    try:
        assert failed_tests(warehouse, target, model=view) == {duplicate: 1, orphan: 2}  # no record: every row
        with psycopg.connect(warehouse) as conn:
            conn.execute(
                "select audit.record_dbt_build(%s, 'as the nightly run records it', %s, 'n2')",
                (f"model.pacbook.{view}", night_2_started),
            )
        assert failed_tests(warehouse, target, model=view) == {orphan: 2}  # loaded before the mark
        compiled = next((target / "compiled").rglob(f"unique_{view}_line_id*.sql")).read_text()
        assert f"loaded_at >= '{night_2_started.isoformat()}'::timestamptz" in compiled, compiled
        every_row = failed_tests(warehouse, target, "--vars", json.dumps({"test_every_row": True}), model=view)
        assert every_row == {duplicate: 1, orphan: 2}
        with psycopg.connect(warehouse) as conn:  # loaded again tonight: back in the scope
            conn.execute("update staging.order_line set _pacbook_loaded_at = now() where line_id = -1")
        assert failed_tests(warehouse, target, model=view) == {duplicate: 1, orphan: 2}
    finally:
        with psycopg.connect(warehouse) as conn:
            conn.execute("delete from staging.order_line where line_id = -1")


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
    night_2_started = warehouse_clock(incremental)
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
    assert_restated_as_returned(incremental, old_order)
    assert query_one(incremental, "select count(*) from dwh.fct_sales where built_at >= %s", (night_2_started,)) == (
        touched[1],
    )
    assert_fact_tests_check_recent_builds(incremental, tmp_path / "night_2", night_2_started, untouched, old_order)
    assert_staging_key_tests_check_recent_loads(incremental, tmp_path / "night_2", night_2_started)

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
    # ... and its tests check every row: all of them are the last build's.
    for model in FACT_COLUMNS:
        assert query_one(incremental, f"select count(distinct built_at) from dwh.{model}") == (1,), model
    for model in FACT_COLUMNS:
        assert fact_rows(incremental, model) == fact_rows(full, model), model


def test_quarantined_orders_leave_the_facts_and_a_corrected_city_takes_its_orders_along(
    postgres, source, monkeypatch, tmp_path
):
    """On a later night: a customer quarantined with his orders leaves the incremental facts; a city
    corrected in the source (dim_geography is type 1, keyed by city and country: another member) takes
    the old orders shipped to that address to the corrected member (before, they kept the key of a
    member that was gone, and the geography_key relationships tests failed the night)."""
    incremental = postgres.fresh_database("warehouse_quarantined_later")
    monkeypatch.setenv("AIRFLOW_CONN_PACBOOK_SOURCE", source)
    monkeypatch.setenv("AIRFLOW_CONN_PACBOOK_WAREHOUSE", incremental)
    extract_source("night_1", interval=night(NIGHTS[0]), as_of=AS_OF)
    build_facts(incremental, tmp_path / "night_1", NIGHTS[0])
    customer, orders = query_one(
        incremental,
        # a customer with a few orders: quarantining him stays under the rejected-rows threshold
        "select customer_id, array_agg(distinct order_id) from dwh.fct_sales group by customer_id "
        "having count(distinct order_id) between 2 and 5 order by customer_id limit 1",
    )
    # the address with the most orders of other customers, and an order shipped elsewhere
    address, shipped_there = query_one(
        incremental,
        "select destination_address_id, array_agg(distinct order_id) from dwh.fct_sales where customer_id <> %s "
        "group by destination_address_id order by count(distinct order_id) desc, destination_address_id limit 1",
        (customer,),
    )
    elsewhere = query_one(
        incremental,
        "select min(order_id) from dwh.fct_sales where destination_address_id <> %s and customer_id <> %s",
        (address, customer),
    )[0]
    elsewhere_built_at = query_all(incremental, "select built_at from dwh.fct_sales where order_id = %s", (elsewhere,))
    # The customer's email breaks in the source: validation quarantines him, and his orders follow.
    with psycopg.connect(source) as conn:
        conn.execute("update customer set email = 'no-address' where customer_id = %s", (customer,))
        conn.execute("update address set city = city || ' (corrected)' where address_id = %s", (address,))
    extract_source("night_2", interval=night(NIGHTS[1]), as_of=AS_OF)
    build_facts(incremental, tmp_path / "night_2", NIGHTS[1])
    for model in ("int_orders_latest_status", *FACT_COLUMNS):
        assert not query_one(incremental, f"select count(*) from dwh.{model} where order_id = any(%s)", (orders,))[0]

    corrected = query_one(
        incremental,
        "select geography_key from dwh.dim_geography where city like '%%(corrected)' and country_id = "
        "(select country_id from staging.address where address_id = %s)",
        (address,),
    )[0]
    for model in FACT_COLUMNS:
        assert query_all(
            incremental, f"select distinct geography_key from dwh.{model} where order_id = any(%s)", (shipped_there,)
        ) == [(corrected,)], model
    assert query_all(incremental, "select built_at from dwh.fct_sales where order_id = %s", (elsewhere,)) == (
        elsewhere_built_at
    )
    # Every fact row points at a member of the dimension: the tests that failed such a night pass.
    tests = run_dbt_cli(incremental, tmp_path / "tests", "test", "--select", "dim_geography,test_name:relationships")
    assert tests.returncode == 0 and "PASS=3 WARN=0 ERROR=0" in tests.stdout, tests.stdout[-3000:]
    for model in FACT_COLUMNS:
        assert f"PASS relationships_{model}_geography_key__geography_key__ref_dim_geography_" in tests.stdout

    full = postgres.fresh_database("warehouse_quarantined_full")
    monkeypatch.setenv("AIRFLOW_CONN_PACBOOK_WAREHOUSE", full)
    extract_source("full", interval=night(NIGHTS[1]), as_of=AS_OF)
    build_facts(full, tmp_path / "full", NIGHTS[1], "--full-refresh")
    for model in FACT_COLUMNS:
        assert fact_rows(incremental, model) == fact_rows(full, model), model


# Versioned attributes: a clean full load knows only today's customer and shipping price, so it
# cannot have the versions the nights recorded; every other column must still be equal.
UNVERSIONED_SALES = (
    "order_id, line_id, book_key, date_key, geography_key, order_status_key, sales_amount, net_sales_amount, "
    "latest_order_status"
)


def dbt_build_killed_at_fct_sales(warehouse: str, target: Path, day: dt.date) -> None:
    """Starts the night's build, lets it run until it reaches fct_sales (held by a lock), kills it."""
    snapshot_at = night(day)[1].strftime("%Y-%m-%d %H:%M:%S")
    command = dbt_command(
        *("build", "--select", "+fct_order_fulfilment", "--exclude-resource-type", "test", "unit_test"),
        *("--vars", json.dumps({"snapshot_at": snapshot_at})),
        target=target,
    )
    with psycopg.connect(warehouse) as blocker:
        blocker.execute("lock table dwh.fct_sales in access exclusive mode")
        build = subprocess.Popen(
            command,
            env=dbt_env(warehouse),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            deadline = time.monotonic() + 180
            while not query_one(
                warehouse,
                "select count(*) from pg_stat_activity where wait_event_type = 'Lock' and query ilike %s",
                ("%fct_sales%",),
            )[0]:
                assert build.poll() is None, "dbt ended before it reached fct_sales"
                assert time.monotonic() < deadline, "dbt never reached fct_sales"
                time.sleep(0.2)
        finally:
            os.killpg(build.pid, signal.SIGKILL)
            build.wait()
        blocker.rollback()
    # the killed build's session ends once its blocked statement runs and finds no client
    deadline = time.monotonic() + 60
    while query_one(warehouse, "select count(*) from pg_stat_activity where application_name = 'dbt'")[0]:
        assert time.monotonic() < deadline, "the killed dbt build's session never ended"
        time.sleep(0.2)


def change_the_shop(conn, customer: int, method: int, old_order: int, day: dt.date):
    """A customer changes email and moves, a shipping method gets a euro dearer, an old order is
    Returned on ``day``; returns the shipping method's old cost."""
    conn.execute("update customer set email = 'moved.reader@example.org' where customer_id = %s", (customer,))
    new_address = conn.execute(
        "insert into address select max(address_id) + 1, '7', 'Quay Street', 'Newtown', max(country_id) "
        "from address returning address_id"
    ).fetchone()[0]
    conn.execute(
        "insert into customer_address values (%s, %s, (select status_id from address_status "
        "where address_status = 'Active'))",
        (customer, new_address),
    )
    old_cost = conn.execute(
        "update shipping_method set cost = cost + 1.00 where method_id = %s returning cost - 1.00", (method,)
    ).fetchone()[0]
    add_status(conn, old_order, RETURNED, dt.datetime.combine(day, dt.time(15)))
    return old_cost


def test_a_second_night_with_changes_versions_restates_and_survives_a_killed_build(
    postgres, source, monkeypatch, tmp_path
):
    nightly = postgres.fresh_database("warehouse_second_night")
    monkeypatch.setenv("AIRFLOW_CONN_PACBOOK_SOURCE", source)
    monkeypatch.setenv("AIRFLOW_CONN_PACBOOK_WAREHOUSE", nightly)
    extract_source("night_1", interval=night(NIGHTS[0]), as_of=AS_OF)
    build_facts(nightly, tmp_path / "night_1", NIGHTS[0])
    customer, method = query_one(
        source, "select customer_id, shipping_method_id from cust_order where order_id = 9000000"
    )
    old_order = query_one(
        nightly,
        "select max(order_id) from dwh.fct_sales where is_net_revenue and order_date < %s",
        (NIGHTS[0] - dt.timedelta(days=60),),
    )[0]
    facts_of_customer = query_all(
        nightly, "select line_id, customer_key from dwh.fct_sales where customer_id = %s order by line_id", (customer,)
    )

    # Before the second night: the customer changes email and moves, shipping gets dearer, an old
    # order is returned, and two new orders arrive (night 2: the customer's; night 3: another one).
    with psycopg.connect(source) as conn:
        old_cost = change_the_shop(conn, customer, method, old_order, NIGHTS[1])
        add_order(conn, 9_000_001, dt.datetime.combine(NIGHTS[1], dt.time(11)))  # the first order's customer
        add_order(conn, 9_000_002, dt.datetime.combine(NIGHTS[2], dt.time(11)))
    extract_source("night_2", interval=night(NIGHTS[1]), as_of=AS_OF)
    build_facts(nightly, tmp_path / "night_2", NIGHTS[1])

    # SCD2: a second version from the night's end; the old facts keep the version they were sold to.
    versions = query_all(
        nightly,
        "select valid_from, valid_to, is_current, city from dwh.dim_customer "
        "where customer_id = %s order by valid_from",
        (customer,),
    )
    end_2 = night(NIGHTS[1])[1].replace(tzinfo=None)
    assert [(v[1], v[2]) for v in versions] == [(end_2, False), (dt.datetime(9999, 12, 31), True)]
    assert versions[1][0] == end_2 and versions[1][3] == "Newtown"
    assert query_one(nightly, "select count(*) from dwh.dim_shipping_method where method_id = %s", (method,))[0] == 2
    assert (
        query_all(
            nightly,
            "select line_id, customer_key from dwh.fct_sales where line_id = any(%s) order by line_id",
            ([line for line, _ in facts_of_customer],),
        )
        == facts_of_customer
    )
    assert_restated_as_returned(nightly, old_order)

    # The third night's build is killed at fct_sales, then rerun: the facts as if nothing happened.
    extract_source("night_3", interval=night(NIGHTS[2]), as_of=AS_OF)
    before_kill = fact_rows(nightly, "fct_sales")
    dbt_build_killed_at_fct_sales(nightly, tmp_path / "night_3_killed", NIGHTS[2])
    assert fact_rows(nightly, "fct_sales") == before_kill
    build_facts(nightly, tmp_path / "night_3", NIGHTS[2])
    # an order placed after the change meets the new customer version and the new shipping price
    placed_after = query_one(
        nightly,
        "select f.order_shipping_cost, c.is_current from dwh.fct_sales f "
        "join dwh.dim_customer c using (customer_key) where f.order_id = 9000002 limit 1",
    )
    cost_before = query_one(nightly, "select order_shipping_cost from dwh.fct_sales where order_id = 9000001 limit 1")
    if query_one(source, "select customer_id = %s from cust_order where order_id = 9000002", (customer,))[0]:
        assert placed_after[1] is True
    assert placed_after[0] == old_cost + 1 and cost_before[0] == old_cost

    # Against a clean full load of the same source: the same lines, amounts and statuses.
    full = postgres.fresh_database("warehouse_second_night_full")
    monkeypatch.setenv("AIRFLOW_CONN_PACBOOK_WAREHOUSE", full)
    extract_source("full", interval=night(NIGHTS[2]), as_of=AS_OF)
    build_facts(full, tmp_path / "full", NIGHTS[2], "--full-refresh")
    unversioned = f"select {UNVERSIONED_SALES} from dwh.fct_sales order by line_id"
    assert query_all(nightly, unversioned) == query_all(full, unversioned)
    totals = "select count(*), sum(sales_amount), sum(net_sales_amount) from dwh.fct_sales"
    assert query_one(nightly, totals) == query_one(full, totals)
