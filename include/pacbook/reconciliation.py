"""After the marts: the warehouse must account for every source row, to the cent.

For each measure, source = warehouse + quarantine, both for the run's data interval and for all
time up to the interval's end (orders placed later, while the run was going, are not compared).
The source is read live, so the comparison is as strict as the source is quiet about the past;
a mismatch fails the run with the measure, the window and the difference.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from decimal import Decimal

from psycopg import sql

from include.pacbook import warehouse
from include.pacbook.session_roles import connect_source

log = logging.getLogger("pacbook.reconciliation")


class ReconciliationError(RuntimeError):
    """The warehouse and the source disagree; the message names each measure and the difference."""


@dataclass(frozen=True)
class Comparison:
    measure: str
    window: str
    source: Decimal
    warehouse: Decimal
    quarantined: Decimal
    tables: str  # where each side comes from, so the message names the tables to look at

    @property
    def difference(self) -> Decimal:
        return self.source - self.warehouse - self.quarantined

    def line(self) -> str:
        return (
            f"{self.measure} [{self.window}] ({self.tables}): source {self.source} = warehouse {self.warehouse} "
            f"+ quarantined {self.quarantined} (difference {self.difference})"
        )


_SOURCE_LINES = """
select count(*), coalesce(sum(ol.price), 0)
from public.order_line ol
join public.cust_order o on o.order_id = ol.order_id
where o.order_date >= %(since)s and o.order_date < %(until)s
"""
_SOURCE_ORDERS = """
select count(*) from public.cust_order where order_date >= %(since)s and order_date < %(until)s
"""
_WAREHOUSE_LINES = """
select count(*), coalesce(sum(sales_amount), 0)
from dwh.fct_sales
where order_date >= %(since)s and order_date < %(until)s
"""
_WAREHOUSE_ORDERS = """
select count(*) from dwh.fct_order_fulfilment where order_date >= %(since)s and order_date < %(until)s
"""
# The quarantined rows that the source still counts and the warehouse lacks. Increments quarantine a
# bad row on the night it arrives and do not take it again, so every run's quarantine counts: for
# each key, the rows of the latest run that quarantined it (a night rerun quarantines them again),
# unless a row with that key reached staging after it was quarantined (fixed at the source and
# reloaded). A duplicate key whose twin loaded in the same run stays counted: its twin arrived
# before it was rejected. Rows without a key can only be told apart within one run: this run's count.
_QUARANTINED = """
with keyed as (
    select
        q.run_id, q.source_row, q.quarantined_at,
        coalesce(q.source_row->>{key_name}, q.run_id || q.ctid::text) as row_key
    from {quarantine} as q
    where q.source_row->>{key_name} is not null or q.run_id = %(run_id)s
),
latest_run as (
    select row_key, (array_agg(run_id order by quarantined_at desc))[1] as run_id from keyed group by row_key
)
select {columns}
from keyed
join latest_run using (row_key, run_id)
where not exists (
    select from {staging} as s where s.{key}::text = keyed.row_key and s._pacbook_loaded_at > keyed.quarantined_at
)
"""


_LINE_TABLES = "source public.order_line, warehouse dwh.fct_sales, quarantine.order_line"
_AMOUNT_TABLES = "source public.order_line.price, warehouse dwh.fct_sales.sales_amount, quarantine.order_line"
_ORDER_TABLES = "source public.cust_order, warehouse dwh.fct_order_fulfilment, quarantine.cust_order"


def _quarantined_query(table: str, key: str, columns: str) -> sql.Composed:
    return sql.SQL(_QUARANTINED).format(
        key_name=sql.Literal(key),
        key=sql.Identifier(key),
        quarantine=sql.Identifier("quarantine", table),
        staging=sql.Identifier("staging", table),
        columns=sql.SQL(columns),
    )


# Quarantined lines with the order they claim, and quarantined orders with their date; the source
# says which window each falls in (an orphan line's order does not exist there: in neither count).
_QUARANTINED_LINES = _quarantined_query(
    "order_line", "line_id", "(source_row->>'order_id')::bigint, coalesce((source_row->>'price')::numeric, 0)"
)
_QUARANTINED_ORDERS = _quarantined_query("cust_order", "order_id", "(source_row->>'order_date')::timestamp")


def _fetch(conn, query: str | sql.Composable, params: dict) -> list[tuple]:
    return conn.execute(query, params).fetchall()


def _quarantine_rows(conn, query: sql.Composable, run_id: str, table: str) -> list[tuple]:
    exists = conn.execute("select to_regclass(%s) is not null", (f"quarantine.{table}",)).fetchone()[0]
    return _fetch(conn, query, {"run_id": run_id}) if exists else []


def compare(
    source_uri: str, warehouse_uri: str, run_id: str, interval_start: dt.datetime, interval_end: dt.datetime
) -> list[Comparison]:
    windows = {
        f"interval {interval_start:%Y-%m-%d %H:%M} to {interval_end:%Y-%m-%d %H:%M}": (interval_start, interval_end),
        f"all time to {interval_end:%Y-%m-%d %H:%M}": (dt.datetime(1, 1, 1), interval_end),
    }
    naive = {name: (a.replace(tzinfo=None), b.replace(tzinfo=None)) for name, (a, b) in windows.items()}
    comparisons = []
    with connect_source(source_uri) as source, warehouse.connect(warehouse_uri) as dwh:
        quarantined_lines = _quarantine_rows(dwh, _QUARANTINED_LINES, run_id, "order_line")
        quarantined_orders = [row[0] for row in _quarantine_rows(dwh, _QUARANTINED_ORDERS, run_id, "cust_order")]
        order_dates = dict(
            _fetch(
                source,
                "select order_id, order_date from public.cust_order where order_id = any(%(ids)s)",
                {"ids": sorted({order_id for order_id, _ in quarantined_lines if order_id is not None})},
            )
        )
        for window, (since, until) in naive.items():
            params = {"since": since, "until": until}
            source_lines, source_amount = _fetch(source, _SOURCE_LINES, params)[0]
            warehouse_lines, warehouse_amount = _fetch(dwh, _WAREHOUSE_LINES, params)[0]
            in_window = [
                price
                for order_id, price in quarantined_lines
                if order_dates.get(order_id) is not None and since <= order_dates[order_id] < until
            ]
            comparisons.append(
                Comparison(
                    "order lines",
                    window,
                    Decimal(source_lines),
                    Decimal(warehouse_lines),
                    Decimal(len(in_window)),
                    _LINE_TABLES,
                )
            )
            comparisons.append(
                Comparison(
                    "sales amount",
                    window,
                    source_amount,
                    warehouse_amount,
                    sum(in_window, Decimal(0)),
                    _AMOUNT_TABLES,
                )
            )
            orders_quarantined = sum(1 for d in quarantined_orders if d is not None and since <= d < until)
            comparisons.append(
                Comparison(
                    "orders",
                    window,
                    Decimal(_fetch(source, _SOURCE_ORDERS, params)[0][0]),
                    Decimal(_fetch(dwh, _WAREHOUSE_ORDERS, params)[0][0]),
                    Decimal(orders_quarantined),
                    _ORDER_TABLES,
                )
            )
    return comparisons


def reconcile(
    source_uri: str, warehouse_uri: str, run_id: str, interval_start: dt.datetime, interval_end: dt.datetime
) -> list[Comparison]:
    """Logs every comparison and raises naming each one that does not balance."""
    comparisons = compare(source_uri, warehouse_uri, run_id, interval_start, interval_end)
    for comparison in comparisons:
        log.info("reconcile %s", comparison.line())
    mismatches = [c for c in comparisons if c.difference != 0]
    if mismatches:
        raise ReconciliationError(
            "the warehouse does not reconcile to the source: "
            + "; ".join(c.line() for c in mismatches)
            + " (RUNBOOK.md#reconciliation-failed)"
        )
    return comparisons
