"""The reconciliation after the marts, on a source with bad rows: source = warehouse + quarantine,
and a warehouse that lost or changed a row fails naming the measure and the difference."""

from __future__ import annotations

import datetime as dt

import psycopg
import pytest

from include.luigi_tasks.extract_source import extract_source
from include.pacbook.reconciliation import ReconciliationError, reconcile
from include.pacbook.source_generator import generate_source
from tests.extract.test_bad_input import _drop_constraints, _inject_bad_rows
from tests.marts.test_dbt_build import dbt_build

NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)


@pytest.fixture(scope="module")
def built_from_dirty_source(postgres, tmp_path_factory):
    source = postgres.fresh_database("source_reconcile")
    generate_source(source, scale=0.05, seed=11)
    with psycopg.connect(source) as conn:
        _drop_constraints(conn)
        _inject_bad_rows(conn)
        # an order placed today, so the run's own interval has something to compare
        conn.execute(
            "insert into cust_order select 9100001, now() - interval '1 hour', customer_id, shipping_method_id, "
            "dest_address_id from cust_order order by order_id limit 1"
        )
        conn.execute("insert into order_line values (9100001, 9100001, (select min(book_id) from book), 21.50)")
        conn.execute("insert into order_history values (9100001, 9100001, 1, now() - interval '1 hour')")
    warehouse = postgres.fresh_database("warehouse_reconcile")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("AIRFLOW_CONN_PACBOOK_SOURCE", source)
        env.setenv("AIRFLOW_CONN_PACBOOK_WAREHOUSE", warehouse)
        env.setenv("PACBOOK_MAX_REJECTED_SHARE", "0.5")
        extract_source("night_reconcile")
        dbt_build(warehouse, tmp_path_factory.mktemp("dbt-target"))
    return source, warehouse


def test_source_equals_warehouse_plus_quarantine_for_the_interval_and_all_time(built_from_dirty_source):
    source, warehouse = built_from_dirty_source
    comparisons = reconcile(source, warehouse, "night_reconcile", NOW - dt.timedelta(days=1), NOW)
    by_key = {(c.measure, c.window.split(" ")[0]): c for c in comparisons}
    assert len(comparisons) == 6 and all(c.difference == 0 for c in comparisons)
    # the quarantine really took part: lines of this source were kept out and are accounted for
    assert by_key[("order lines", "all")].quarantined >= 4
    # the ancient order and the one without a customer; the future one falls after the window
    assert by_key[("orders", "all")].quarantined == 2
    assert by_key[("order lines", "interval")].source == 1
    assert by_key[("sales amount", "interval")].warehouse == 21.50


def test_a_lost_fact_row_fails_naming_the_measure_and_the_difference(built_from_dirty_source):
    source, warehouse = built_from_dirty_source
    with psycopg.connect(warehouse, autocommit=True) as conn:  # this test runs last in the module
        conn.execute("delete from dwh.fct_sales where line_id = 9100001")
    with pytest.raises(ReconciliationError) as failure:
        reconcile(source, warehouse, "night_reconcile", NOW - dt.timedelta(days=1), NOW)
    message = str(failure.value)
    assert "order lines [interval" in message and "(difference 1)" in message
    assert "sales amount [all time" in message and "(difference 21.50)" in message
    assert "warehouse dwh.fct_sales.sales_amount" in message and "dwh.fct_order_fulfilment" not in message
