"""Is the PacBook source ready to be read? Used by the DAG's first sensor."""

from __future__ import annotations

from dataclasses import dataclass

import psycopg

from include.pacbook.warehouse import connect


@dataclass(frozen=True)
class SourceReadiness:
    ready: bool
    reason: str


def check_source_ready(uri: str) -> SourceReadiness:
    """Ready when the source answers and holds orders; otherwise says why, for the sensor's log."""
    try:
        with connect(uri) as conn:
            conn.read_only = True
            has_table = conn.execute("select to_regclass('public.cust_order') is not null").fetchone()[0]
            if not has_table:
                return SourceReadiness(False, "source has no table public.cust_order yet")
            orders, latest = conn.execute("select count(*), max(order_date) from public.cust_order").fetchone()
    except psycopg.OperationalError as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        return SourceReadiness(False, f"source database does not answer: {first_line}")
    if orders == 0:
        return SourceReadiness(False, "source table public.cust_order is empty")
    return SourceReadiness(True, f"source ready: {orders} orders, latest at {latest}")
