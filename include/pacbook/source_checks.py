"""Is the PacBook source ready to be read for a night? Used by the DAG's first sensor."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import psycopg

from include.pacbook.session_roles import connect_source


@dataclass(frozen=True)
class SourceReadiness:
    ready: bool
    reason: str


def check_source_ready(uri: str, interval_end: dt.datetime) -> SourceReadiness:
    """Ready when the source answers, holds orders, and has data up to the night's end.

    The source has no load-time column, so "data up to the end" is read from the server: a read
    replica must have replayed the primary's transactions past the end of the night (else the
    night's last orders may still be on their way), and a primary's clock must be past it (a
    transaction of the night may still be open before that). Returns why not, for the sensor's log.
    """
    try:
        with connect_source(uri) as conn:
            has_table = conn.execute("select to_regclass('public.cust_order') is not null").fetchone()[0]
            if not has_table:
                return SourceReadiness(False, "source has no table public.cust_order yet")
            orders, latest = conn.execute("select count(*), max(order_date) from public.cust_order").fetchone()
            is_replica, reached = conn.execute(
                "select pg_is_in_recovery(), "
                "case when pg_is_in_recovery() then pg_last_xact_replay_timestamp() else now() end"
            ).fetchone()
    except psycopg.OperationalError as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        return SourceReadiness(False, f"source database does not answer: {first_line}")
    if orders == 0:
        return SourceReadiness(False, "source table public.cust_order is empty")
    end = interval_end if interval_end.tzinfo else interval_end.replace(tzinfo=dt.UTC)
    if reached is None or reached < end:
        server = "replica has replayed the primary up to" if is_replica else "source clock reads"
        return SourceReadiness(
            False,
            f"source has no data up to the night's end {end:%Y-%m-%d %H:%M} UTC yet: {server} {reached or 'nothing'}",
        )
    return SourceReadiness(True, f"source ready up to {end:%Y-%m-%d %H:%M} UTC: {orders} orders, latest at {latest}")
