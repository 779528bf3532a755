"""The source sensor's question on a real PostgreSQL: does the source answer, hold orders, and have
data up to the end of the night being loaded? Each "no" says why, for the on-call engineer."""

from __future__ import annotations

import datetime as dt

import psycopg

from include.pacbook.source_checks import check_source_ready

NOW = dt.datetime.now(dt.UTC)


def test_a_source_past_the_nights_end_is_ready(generated_source):
    readiness = check_source_ready(generated_source, NOW - dt.timedelta(hours=1))
    assert readiness.ready, readiness.reason
    assert "orders, latest at 2024-03-" in readiness.reason


def test_a_night_that_has_not_ended_on_the_source_is_not_ready(generated_source):
    end = NOW + dt.timedelta(hours=2)
    readiness = check_source_ready(generated_source, end)
    assert not readiness.ready
    assert f"no data up to the night's end {end:%Y-%m-%d %H:%M} UTC yet: source clock reads" in readiness.reason


def test_a_naive_interval_end_is_read_as_utc(generated_source):
    assert not check_source_ready(generated_source, (NOW + dt.timedelta(hours=2)).replace(tzinfo=None)).ready
    assert check_source_ready(generated_source, (NOW - dt.timedelta(hours=2)).replace(tzinfo=None)).ready


def test_an_empty_or_missing_order_table_is_not_ready(postgres):
    source = postgres.fresh_database("source_not_ready")
    assert check_source_ready(source, NOW).reason == "source has no table public.cust_order yet"
    with psycopg.connect(source) as conn:
        conn.execute("create table public.cust_order (order_id integer primary key, order_date timestamp)")
    readiness = check_source_ready(source, NOW)
    assert (readiness.ready, readiness.reason) == (False, "source table public.cust_order is empty")


def test_an_unreachable_source_is_not_ready_and_says_so():
    readiness = check_source_ready("postgresql://pacbook:x@127.0.0.1:9/pacbook_source", NOW)
    assert not readiness.ready
    assert readiness.reason.startswith("source database does not answer: connection")
