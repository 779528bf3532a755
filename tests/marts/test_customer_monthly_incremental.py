"""fct_customer_monthly, incremental by customer, on real dbt and real PostgreSQL.

Three nights, the first in February and the next two in March: a new month of data, customers who
order again, move, have an old order returned late or are quarantined with all their orders. After
each night the table must hold exactly what a full rebuild of it holds, every column compared, while
the customers nothing happened to keep their rows as they were.
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
from tests.extract.test_incremental_extraction import AS_OF, NIGHTS, add_status, night
from tests.marts.test_dbt_build import run_dbt_cli
from tests.marts.test_incremental_facts import RETURNED

FEBRUARY_NIGHT = dt.date(2024, 2, 28)
MONTHLY = (
    "select customer_month_key, customer_id, customer_key, month_date_key, month, orders, order_lines, revenue, "
    "net_revenue, cumulative_revenue, cumulative_order_lines, months_since_last_order, has_ordered, "
    "sales_loaded_at, customer_versions_fingerprint, cumulative_net_revenue from dwh.fct_customer_monthly"
)


@pytest.fixture
def source(postgres) -> str:
    uri = postgres.fresh_database("source_customer_monthly")
    generate_source(uri, scale=0.05, seed=53)
    return uri


def build_monthly(
    warehouse: str, target: Path, day: dt.date, *extra: str, select: str = "+fct_customer_monthly"
) -> int:
    """Builds fct_customer_monthly and what it reads for the night of ``day``; returns the rows it inserted."""
    snapshot_at = night(day)[1].strftime("%Y-%m-%d %H:%M:%S")
    result = run_dbt_cli(
        warehouse,
        target,
        *("build", "--select", select, "--exclude-resource-type", "test", "unit_test"),
        *("--vars", json.dumps({"snapshot_at": snapshot_at})),
        *extra,
    )
    assert result.returncode == 0, result.stdout[-5000:]
    results = json.loads((target / "run_results.json").read_text())["results"]
    (monthly,) = [r for r in results if r["unique_id"].endswith(".fct_customer_monthly")]
    return monthly["adapter_response"]["rows_affected"]


def rows_of(warehouse: str, customer: int) -> list[tuple]:
    return query_all(warehouse, f"{MONTHLY} where customer_id = %s order by month", (customer,))


def assert_same_as_a_full_rebuild(warehouse: str, target: Path, day: dt.date) -> None:
    """Rebuilds the table from scratch over the same facts and dimensions, compares every column, and
    puts the incremental table back for the next night."""
    incremental = query_all(warehouse, f"{MONTHLY} order by customer_id, month")
    with psycopg.connect(warehouse) as conn:
        conn.execute("create table dwh.customer_monthly_incremental as table dwh.fct_customer_monthly")
    build_monthly(warehouse, target, day, "--full-refresh", select="fct_customer_monthly")
    full = query_all(warehouse, f"{MONTHLY} order by customer_id, month")
    assert len(incremental) == len(full)
    assert [row for row in incremental if row not in set(full)] == []
    assert incremental == full
    with psycopg.connect(warehouse) as conn:
        conn.execute("truncate dwh.fct_customer_monthly")
        conn.execute("insert into dwh.fct_customer_monthly table dwh.customer_monthly_incremental")
        conn.execute("drop table dwh.customer_monthly_incremental")


def add_order_for(conn, customer: int, order_id: int, placed: dt.datetime) -> None:
    conn.execute(
        "insert into cust_order select %s, %s, customer_id, shipping_method_id, dest_address_id "
        "from cust_order where customer_id = %s order by order_id limit 1",
        (order_id, placed, customer),
    )
    conn.execute(
        "insert into order_line values "
        "((select max(line_id) + 1 from order_line), %s, (select min(book_id) from book), 12.5)",
        (order_id,),
    )
    add_status(conn, order_id, 1, placed)


def move(conn, customer: int) -> None:
    """The customer moves to a new address (a new version of the customer)."""
    address = conn.execute(
        "insert into address select max(address_id) + 1, '9', 'Harbour Road', 'Port Ellen', max(country_id) "
        "from address returning address_id"
    ).fetchone()[0]
    conn.execute(
        "insert into customer_address values (%s, %s, (select status_id from address_status "
        "where address_status = 'Active'))",
        (customer, address),
    )


def test_nightly_builds_by_customer_equal_a_full_rebuild(postgres, source, monkeypatch, tmp_path):
    warehouse = postgres.fresh_database("warehouse_customer_monthly")
    monkeypatch.setenv("AIRFLOW_CONN_PACBOOK_SOURCE", source)
    monkeypatch.setenv("AIRFLOW_CONN_PACBOOK_WAREHOUSE", warehouse)
    extract_source("night_1", interval=night(FEBRUARY_NIGHT), as_of=AS_OF)
    first = build_monthly(warehouse, tmp_path / "night_1", FEBRUARY_NIGHT)
    assert first == query_one(warehouse, "select count(*) from dwh.fct_customer_monthly")[0] > 0
    assert query_one(warehouse, "select max(month) from dwh.fct_customer_monthly") == (dt.date(2024, 2, 1),)

    # Customers nothing happens to after January 2024 (no order, no status), a few orders each:
    # quarantining one stays under the rejected-rows threshold.
    quiet = [
        customer
        for (customer,) in query_all(
            source,
            "select o.customer_id from cust_order o join order_history h using (order_id) group by o.customer_id "
            "having max(h.status_date) < '2024-02-01' and count(distinct o.order_id) between 2 and 5 "
            "order by o.customer_id limit 5",
        )
    ]
    untouched, returning, quarantined, mover, late_mover = quiet
    untouched_in_february = rows_of(warehouse, untouched)
    old_order = query_one(source, "select max(order_id) from cust_order where customer_id = %s", (returning,))[0]

    # Night 2 (March): a new month; an order of a customer back after months, a customer who moves,
    # a late Returned status on an old order, a customer whose email breaks (quarantined, orders too).
    with psycopg.connect(source) as conn:
        add_order_for(conn, returning, 9_300_000, dt.datetime.combine(NIGHTS[0], dt.time(10)))
        add_status(conn, old_order, RETURNED, dt.datetime.combine(NIGHTS[0], dt.time(15)))
        move(conn, mover)
        conn.execute("update customer set email = 'no-address' where customer_id = %s", (quarantined,))
    extract_source("night_2", interval=night(NIGHTS[0]), as_of=AS_OF)
    inserted = build_monthly(warehouse, tmp_path / "night_2", NIGHTS[0])
    total = query_one(warehouse, "select count(*), count(distinct customer_id) from dwh.fct_customer_monthly")
    assert inserted < total[0], "only the restated customers and the new month are written"

    march = rows_of(warehouse, untouched)
    assert march[:-1] == untouched_in_february, "the untouched customer keeps his rows"
    assert march[-1][4:13] == (dt.date(2024, 3, 1), 0, 0, 0, 0, *march[-2][9:11], march[-2][11] + 1, False)
    assert rows_of(warehouse, quarantined) == []
    returning_rows = rows_of(warehouse, returning)
    assert returning_rows[-1][4:6] == (dt.date(2024, 3, 1), 1)
    assert returning_rows[-1][11] == 0
    assert query_one(
        warehouse,
        "select count(distinct customer_key) from dwh.fct_customer_monthly "
        "where customer_id = %s and month >= '2024-02-01'",
        (mover,),
    ) == (2,), "February keeps the old version, March has the new one"
    assert_same_as_a_full_rebuild(warehouse, tmp_path / "refresh_2", NIGHTS[0])

    # Night 3 (same month): the untouched customer orders, another customer moves (no sales change).
    with psycopg.connect(source) as conn:
        add_order_for(conn, untouched, 9_300_001, dt.datetime.combine(NIGHTS[1], dt.time(9)))
        move(conn, late_mover)
    (built_from,) = query_one(warehouse, "select max(sales_loaded_at) from dwh.fct_customer_monthly")
    returning_in_march = rows_of(warehouse, returning)
    extract_source("night_3", interval=night(NIGHTS[1]), as_of=AS_OF)
    inserted = build_monthly(warehouse, tmp_path / "night_3", NIGHTS[1])
    # Restated: the customers with sales lines that arrived tonight, and the one who moved; no one else.
    restated = {
        customer
        for (customer,) in query_all(
            warehouse, "select distinct customer_id from dwh.fct_sales where loaded_at > %s", (built_from,)
        )
    } | {late_mover}
    assert untouched in restated and returning not in restated
    # Each is restated from the first month of his new lines (March for all of them: one row each),
    # the customer who moved in full; every row written is one of theirs.
    written = query_all(
        warehouse,
        "select customer_id, count(*) from dwh.fct_customer_monthly "
        "where built_at = (select max(built_at) from dwh.fct_customer_monthly) group by customer_id",
    )
    assert {customer for customer, _ in written} == restated
    assert sum(rows for _, rows in written) == inserted
    assert dict(written)[untouched] == 1, "the customer who ordered in March: his March row only"
    (late_mover_rows,) = query_one(
        warehouse, "select count(*) from dwh.fct_customer_monthly where customer_id = %s", (late_mover,)
    )
    assert dict(written)[late_mover] == late_mover_rows, "the customer who moved: his whole history"
    assert rows_of(warehouse, untouched)[-1][4:6] == (dt.date(2024, 3, 1), 1)
    assert rows_of(warehouse, returning) == returning_in_march
    assert (
        rows_of(warehouse, late_mover)[-1][2]
        == query_one(
            warehouse, "select customer_key from dwh.dim_customer where customer_id = %s and is_current", (late_mover,)
        )[0]
    )
    assert_same_as_a_full_rebuild(warehouse, tmp_path / "refresh_3", NIGHTS[1])

    # fct_sales rebuilt from scratch by changed code (a new net-revenue rule): the same lines, the same
    # arrival times, other amounts, every line written anew. The customers whose amounts moved are restated.
    with psycopg.connect(warehouse) as conn:
        conn.execute("update dwh.fct_sales set built_at = now()")
        conn.execute("update dwh.fct_sales set net_sales_amount = 0 where customer_id = %s", (returning,))
    assert build_monthly(warehouse, tmp_path / "rule", NIGHTS[1], select="fct_customer_monthly") == len(
        returning_in_march
    )
    assert rows_of(warehouse, returning)[-1][8] == 0
    assert_same_as_a_full_rebuild(warehouse, tmp_path / "refresh_rule", NIGHTS[1])

    # An early order of a customer leaves the fact (its lines deleted, as when validation moves an order
    # out of staging) on the night a later order of his is written anew: his rows are restated from the
    # early order's month on, not only from the later one's (his earlier lines no longer add up).
    customer, early_order, later_order = query_one(
        warehouse,
        "select customer_id, (array_agg(order_id order by order_date))[1], "
        "(array_agg(order_id order by order_date desc))[1] from dwh.fct_sales group by customer_id "
        "having min(date_trunc('month', order_date)) < max(date_trunc('month', order_date)) "
        "order by customer_id limit 1",
    )
    with psycopg.connect(warehouse) as conn:
        conn.execute("delete from dwh.fct_sales where order_id = %s", (early_order,))
        conn.execute("update dwh.fct_sales set built_at = now() where order_id = %s", (later_order,))
    build_monthly(warehouse, tmp_path / "early_order_gone", NIGHTS[1], select="fct_customer_monthly")
    assert_same_as_a_full_rebuild(warehouse, tmp_path / "refresh_early_order_gone", NIGHTS[1])
