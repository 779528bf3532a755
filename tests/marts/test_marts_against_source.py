"""Every contract mart against queries written here against a hand-built source with known edge cases:
a customer who moves between two orders, an order cancelled a week later, a one-order customer, a
month with no sales, the same book twice in one order, a customer who never ordered.

Three nights: the first sees the customer at her first address; before the second she moves; before
the third she orders again. The snapshot stamps each version with its night, so the facts join the
version valid at each order's time.
"""

from __future__ import annotations

from decimal import Decimal

import psycopg
import pytest

from include.luigi_tasks.extract_source import extract_source
from include.pacbook import config
from tests.conftest import query_all, query_one
from tests.marts.test_dbt_build import dbt_build

SCHEMA_SQL = (config.PROJECT_ROOT / "include" / "pacbook" / "source_schema.sql").read_text()

REFERENCE_ROWS = """
insert into country values (1, 'Indonesia'), (2, 'Singapore'), (3, 'Singapore');
insert into address_status values (1, 'Active'), (2, 'Inactive');
insert into book_language values (1, 'eng', 'English'), (2, 'ind', 'Indonesian');
insert into order_status values (1, 'Order Received'), (2, 'Pending Delivery'), (3, 'Delivery In Progress'),
    (4, 'Delivered'), (5, 'Cancelled'), (6, 'Returned');
insert into shipping_method values (1, 'Standard', 5.90), (2, 'Priority', 8.90), (3, 'Express', 11.90),
    (4, 'International', 24.50);
insert into publisher values (1, 'Gramedia'), (2, 'O''Reilly');
insert into author values (1, 'Zoë O''Brien'), (2, 'Łukasz Müller');
insert into book values
    (10, 'Laskar  Pelangi', '9789793062792', 2, 529, '2005-09-01', 1),
    (11, 'Learning SQL', '0596520832', 1, 0, '1900-01-01', 2),
    (12, 'No Author Book', '9780000000012', 1, 120, '2020-01-01', 1);
insert into book_author values (10, 1), (11, 1), (11, 2);
insert into address values (100, '1', 'Jalan Sudirman', 'Jakarta', 1), (101, '22', 'Orchard Road', 'Singapore', 2),
    (102, null, 'Jalan Braga', 'Bandung', 1);
insert into customer values (1, 'Siti', 'Rahayu', 'siti@example.com'), (2, 'Budi', 'O''Neil', 'budi@example.com'),
    (3, 'Never', 'Ordered', 'never@example.com');
insert into customer_address values (1, 100, 1), (2, 102, 1), (3, 102, 1);
"""

# Night 1 (2024-02-01): Siti's January order; Budi's order, cancelled a week later.
NIGHT_1_ORDERS = """
insert into cust_order values
    (1, '2024-01-10 09:00:00', 1, 1, 100),
    (2, '2024-01-20 10:00:00', 2, 2, 102);
insert into order_line values (1, 1, 10, 12.50), (2, 1, 10, 12.50), (3, 1, 11, 0.00), (4, 2, 12, 20.00);
insert into order_history values
    (1, 1, 1, '2024-01-10 09:00:00'), (2, 1, 2, '2024-01-11 09:00:00'), (3, 1, 4, '2024-01-15 09:00:00'),
    (4, 2, 1, '2024-01-20 10:00:00'), (5, 2, 5, '2024-01-27 10:00:00');
"""

# Night 2 (2024-03-01): Siti has moved to Singapore; February had no sales.
NIGHT_2_CHANGES = """
update customer_address set status_id = 2 where customer_id = 1 and address_id = 100;
insert into customer_address values (1, 101, 1);
"""

# Night 3 (2024-03-31): Siti orders again, from Singapore.
NIGHT_3_ORDERS = """
insert into cust_order values (3, '2024-03-20 15:30:00', 1, 4, 101);
insert into order_line values (5, 3, 12, 33.33);
insert into order_history values (6, 3, 1, '2024-03-20 15:30:00');
"""


def _run_night(source: str, warehouse: str, night: str, monkeypatch, target) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_PACBOOK_SOURCE", source)
    monkeypatch.setenv("AIRFLOW_CONN_PACBOOK_WAREHOUSE", warehouse)
    extract_source(f"night_{night}")
    dbt_build(warehouse, target, "--vars", f"{{snapshot_at: '{night} 00:00:00'}}")


@pytest.fixture(scope="module")
def three_nights(postgres, tmp_path_factory):
    source = postgres.fresh_database("source_edge_cases")
    warehouse = postgres.fresh_database("warehouse_edge_cases")
    with psycopg.connect(source) as conn:
        conn.execute("set search_path = public")
        conn.execute(SCHEMA_SQL)
        conn.execute(REFERENCE_ROWS)
        conn.execute(NIGHT_1_ORDERS)
    target = tmp_path_factory.mktemp("dbt-target")
    with pytest.MonkeyPatch.context() as monkeypatch:
        _run_night(source, warehouse, "2024-02-01", monkeypatch, target)
        with psycopg.connect(source) as conn:
            conn.execute(NIGHT_2_CHANGES)
        _run_night(source, warehouse, "2024-03-01", monkeypatch, target)
        with psycopg.connect(source) as conn:
            conn.execute(NIGHT_3_ORDERS)
        _run_night(source, warehouse, "2024-03-31", monkeypatch, target)
    return source, warehouse


def test_a_customer_who_moved_has_two_versions_and_each_order_joins_its_own(three_nights):
    _, warehouse = three_nights
    versions = query_all(
        warehouse,
        "select city, valid_from, valid_to, is_current from dwh.dim_customer where customer_id = 1 order by valid_from",
    )
    assert [(city, current) for city, _, _, current in versions] == [("Jakarta", False), ("Singapore", True)]
    assert str(versions[1][1]) == "2024-03-01 00:00:00"  # stamped with the night that saw the move
    joined = query_all(
        warehouse,
        """
        select f.order_id, c.city
        from dwh.fct_sales f join dwh.dim_customer c on c.customer_key = f.customer_key
        where f.customer_id = 1 group by 1, 2 order by 1
        """,
    )
    assert joined == [(1, "Jakarta"), (3, "Singapore")]
    # Customers who never ordered still get their one current version.
    assert query_one(warehouse, "select count(*) from dwh.dim_customer where customer_id = 3 and is_current")[0] == 1


def test_monthly_sales_matches_the_source(three_nights):
    source, warehouse = three_nights
    expected = query_all(
        source,
        """
        with latest as (
            select distinct on (h.order_id) h.order_id, s.status_value
            from order_history h join order_status s using (status_id)
            order by h.order_id, h.status_date desc, h.history_id desc
        )
        select date_trunc('month', o.order_date)::date, count(distinct o.order_id), count(*), sum(l.price),
               coalesce(sum(l.price) filter (
                   where coalesce(latest.status_value, '') not in ('Cancelled', 'Returned')), 0),
               count(distinct o.customer_id)
        from cust_order o join order_line l using (order_id) left join latest using (order_id)
        group by 1 order by 1
        """,
    )
    actual = query_all(
        warehouse,
        "select month, orders, books_sold, gross_revenue, net_revenue, customers from marts.monthly_sales order by 1",
    )
    assert actual == expected
    # Known by construction: February had no sales; Budi's cancellation leaves January's net short by 20.00.
    assert [str(row[0]) for row in actual] == ["2024-01-01", "2024-03-01"]
    assert actual[0][3] - actual[0][4] == Decimal("20.00")


def test_book_sales_monthly_counts_the_same_book_twice_in_one_order(three_nights):
    source, warehouse = three_nights
    expected = query_all(
        source,
        "select book_id, date_trunc('month', o.order_date)::date, count(*), sum(l.price) "
        "from order_line l join cust_order o using (order_id) group by 1, 2 order by 1, 2",
    )
    actual = query_all(
        warehouse, "select book_id, month, quantity, gross_revenue from marts.book_sales_monthly order by 1, 2"
    )
    assert actual == expected
    assert (10, "2024-01-01", 2) in [(b, str(m), q) for b, m, q, _ in actual]


def test_customer_repeat_orders_matches_the_source(three_nights):
    source, warehouse = three_nights
    expected = query_all(
        source,
        """
        select customer_id, count(*), min(order_date), max(order_date),
               case when count(*) > 1 then round(
                   (extract(epoch from max(order_date) - min(order_date)) / 86400 / (count(*) - 1))::numeric, 2)
               end
        from cust_order group by 1 order by 1
        """,
    )
    actual = query_all(
        warehouse,
        "select customer_id, orders, first_order_at, last_order_at, avg_days_between_orders "
        "from marts.customer_repeat_orders order by 1",
    )
    assert actual == expected
    assert actual[1][4] is None  # Budi ordered once
    assert actual[0][4] == Decimal("70.27")  # Siti: 2024-01-10 09:00 → 2024-03-20 15:30


def test_daily_sales_and_fulfilment_match_the_source(three_nights):
    source, warehouse = three_nights
    expected = query_all(
        source,
        "select o.order_date::date, count(distinct o.order_id), sum(l.price) "
        "from cust_order o join order_line l using (order_id) group by 1 order by 1",
    )
    actual = query_all(warehouse, "select date, orders, gross_revenue from marts.daily_sales order by 1")
    assert [row for row in actual if row[1] > 0] == expected
    cancelled = query_one(warehouse, "select latest_order_status from dwh.fct_order_fulfilment where order_id = 2")
    assert cancelled == ("Cancelled",)
