"""Nightly increments of the growing tables (cust_order, order_line, order_history) on real PostgreSQL.

Whatever the order of the nights, however often one is loaded, and whether a load is killed half-way,
staging ends equal to the source up to the latest night loaded: every row once, none missing.
The expected side is computed from the source by SQL written here, not by the extraction code.
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import time

import psycopg
import pytest
from psycopg import sql

from include.luigi_tasks.extract_source import extract_source
from include.luigi_tasks.streaming_copy import LOADED_AT_COLUMN
from include.pacbook import config
from include.pacbook.pipeline_audit import rows_by_table
from include.pacbook.source_generator import generate_source
from include.pacbook.validation import TooManyRejectedRowsError
from tests.conftest import query_all, query_one

LAST_DAY = dt.date(2024, 3, 26)  # the generator's last day of orders
AS_OF = dt.datetime(2024, 3, 28, 6, 0)  # when the copies are "taken": after every night loaded here
NIGHTS = [LAST_DAY - dt.timedelta(days=2), LAST_DAY - dt.timedelta(days=1), LAST_DAY]

# Each growing table: its key, its columns and how to date a source row (independently of the code).
EXPECTED_SOURCE_ROWS = {
    "cust_order": "select t.* from public.cust_order as t where t.order_date < %(end)s",
    "order_line": (
        "select t.* from public.order_line as t join public.cust_order as o using (order_id) "
        "where o.order_date < %(end)s"
    ),
    "order_history": "select t.* from public.order_history as t where t.status_date < %(end)s",
}
KEYS = {"cust_order": "order_id", "order_line": "line_id", "order_history": "history_id"}


def night(day: dt.date) -> tuple[dt.datetime, dt.datetime]:
    start = dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC)
    return start, start + dt.timedelta(days=1)


@pytest.fixture
def source(postgres) -> str:
    """A small source, plus orders of our own on each of the last three nights (two lines, two statuses)."""
    uri = postgres.fresh_database("source_increments")
    generate_source(uri, scale=0.05, seed=23)
    with psycopg.connect(uri) as conn:
        for n, day in enumerate(NIGHTS):
            add_order(conn, 9_000_000 + n, dt.datetime.combine(day, dt.time(10, 30)))
    return uri


def add_order(conn, order_id: int, placed: dt.datetime, lines: int = 2) -> None:
    conn.execute(
        "insert into cust_order select %s, %s, customer_id, shipping_method_id, dest_address_id "
        "from cust_order order by order_id limit 1",
        (order_id, placed),
    )
    for n in range(lines):
        conn.execute(
            "insert into order_line values ((select max(line_id) + 1 from order_line), %s, "
            "(select min(book_id) + %s from book), %s)",
            (order_id, n, 10 + n),
        )
    add_status(conn, order_id, 1, placed)
    add_status(conn, order_id, 2, placed + dt.timedelta(hours=2))


def add_status(conn, order_id: int, status_id: int, when: dt.datetime) -> None:
    conn.execute(
        "insert into order_history values ((select max(history_id) + 1 from order_history), %s, %s, %s)",
        (order_id, status_id, when),
    )


@pytest.fixture
def use_warehouse(postgres, source, monkeypatch):
    """Points the connections at the source and a fresh warehouse; returns the warehouse URI."""

    def fresh(prefix: str) -> str:
        uri = postgres.fresh_database(prefix)
        monkeypatch.setenv("AIRFLOW_CONN_PACBOOK_SOURCE", source)
        monkeypatch.setenv("AIRFLOW_CONN_PACBOOK_WAREHOUSE", uri)
        return uri

    return fresh


def load(run_id: str, day: dt.date, full_refresh: bool = False) -> dict[str, int]:
    return extract_source(run_id, interval=night(day), as_of=AS_OF, full_refresh=full_refresh)


def fingerprint(uri: str, query: str, table: str, params: dict | None = None) -> tuple:
    """Row count and a digest of every row's source columns, in key order."""
    columns = sql.SQL(", ").join(sql.Identifier("t", c) for c in _source_columns(table))
    row = sql.SQL("row({})").format(columns)
    digest = sql.SQL("select count(*), md5(string_agg({row}::text, '|' order by t.{key})) from ({query}) as t").format(
        row=row, key=sql.Identifier(KEYS[table]), query=sql.SQL(query)
    )
    with psycopg.connect(uri) as conn:
        return conn.execute(digest, params or {}).fetchone()


def _source_columns(table: str) -> list[str]:
    return {
        "cust_order": ["order_id", "order_date", "customer_id", "shipping_method_id", "dest_address_id"],
        "order_line": ["line_id", "order_id", "book_id", "price"],
        "order_history": ["history_id", "order_id", "status_id", "status_date"],
    }[table]


def assert_staging_equals_source_up_to(source: str, warehouse: str, day: dt.date) -> None:
    end = night(day)[1].replace(tzinfo=None)
    for table, query in EXPECTED_SOURCE_ROWS.items():
        expected = fingerprint(source, query, table, {"end": end})
        staged = fingerprint(warehouse, f"select * from staging.{table}", table)
        assert staged == expected, f"staging.{table} after night {day}"


def load_modes(warehouse: str, run_id: str) -> dict[str, tuple[str, int]]:
    rows = query_all(
        warehouse,
        "select table_name, load_mode, rows_loaded from audit.extract_load where run_id = %s and table_name = any(%s)",
        (run_id, list(KEYS)),
    )
    return {table: (mode, loaded) for table, mode, loaded in rows}


def test_the_first_night_loads_the_past_and_the_next_takes_only_its_own_rows(source, use_warehouse):
    warehouse = use_warehouse("warehouse_increments")
    load("night_1", NIGHTS[0])
    assert_staging_equals_source_up_to(source, warehouse, NIGHTS[0])
    assert {mode for mode, _ in load_modes(warehouse, "night_1").values()} == {"full"}

    load("night_2", NIGHTS[1])
    assert_staging_equals_source_up_to(source, warehouse, NIGHTS[1])
    start, end = (moment.replace(tzinfo=None) for moment in night(NIGHTS[1]))
    expected = {
        table: query_one(source, f"select count(*) from ({query}) as t", {"end": end})[0]
        - query_one(source, f"select count(*) from ({query}) as t", {"end": start})[0]
        for table, query in EXPECTED_SOURCE_ROWS.items()
    }
    assert load_modes(warehouse, "night_2") == {table: ("increment", n) for table, n in expected.items()}
    assert expected["cust_order"] >= 1  # our own order of that night, at least
    # the watermark is the highest key loaded
    watermark = query_one(
        warehouse, "select high_water_key from audit.extraction_watermark where table_name = %s", ("order_line",)
    )
    assert watermark == query_one(warehouse, "select max(line_id) from staging.order_line")


def test_rows_recorded_late_are_caught_by_the_watermark(source, use_warehouse):
    warehouse = use_warehouse("warehouse_late_rows")
    load("night_1", NIGHTS[0])
    load("night_2", NIGHTS[1])
    with psycopg.connect(source) as conn:
        old_order = conn.execute("select min(order_id) from cust_order").fetchone()[0]
        # recorded after night 2 was loaded, dated before it: only the watermark can find them
        add_order(conn, 9_100_000, dt.datetime.combine(NIGHTS[0] - dt.timedelta(days=5), dt.time(9)))
        add_status(conn, old_order, 5, dt.datetime.combine(NIGHTS[0], dt.time(23)))
        # a Returned status on an old order, dated on the last night: found by its date
        add_status(conn, old_order, 6, dt.datetime.combine(NIGHTS[2], dt.time(8)))
    load("night_3", NIGHTS[2])
    assert_staging_equals_source_up_to(source, warehouse, NIGHTS[2])
    assert query_one(warehouse, "select count(*) from staging.order_line where order_id = 9100000")[0] == 2
    statuses = query_all(
        warehouse, "select status_id from staging.order_history where order_id = %s order by status_date", (old_order,)
    )
    assert statuses[-2:] == [(5,), (6,)]


def test_the_same_night_twice_and_nights_out_of_order_leave_the_same_staging(source, use_warehouse):
    in_order = use_warehouse("warehouse_in_order")
    for n, day in enumerate(NIGHTS):
        load(f"in_order_{n}", day)
    shuffled = use_warehouse("warehouse_shuffled")
    for run_id, day in (("last", NIGHTS[2]), ("first", NIGHTS[0]), ("middle", NIGHTS[1]), ("last_again", NIGHTS[2])):
        load(run_id, day)
    assert_staging_equals_source_up_to(source, in_order, NIGHTS[2])
    assert_staging_equals_source_up_to(source, shuffled, NIGHTS[2])
    # a night loaded again takes its rows again and replaces them: nothing doubled
    assert load_modes(shuffled, "last_again")["cust_order"][1] >= 1


def test_full_refresh_after_increments_reloads_the_same_rows(source, use_warehouse):
    warehouse = use_warehouse("warehouse_full_refresh")
    for n, day in enumerate(NIGHTS):
        load(f"night_{n}", day)
    before = {t: fingerprint(warehouse, f"select * from staging.{t}", t) for t in KEYS}
    load("refresh", NIGHTS[2], full_refresh=True)
    assert {t: fingerprint(warehouse, f"select * from staging.{t}", t) for t in KEYS} == before
    assert {mode for mode, _ in load_modes(warehouse, "refresh").values()} == {"full"}
    # every staged row of the refresh arrived with it: the incremental facts rebuild them all
    loaded_at = sql.Identifier(LOADED_AT_COLUMN)
    refreshed_at = query_one(
        warehouse,
        sql.SQL("select count(distinct {}) from staging.cust_order").format(loaded_at).as_string(),
    )[0]
    assert refreshed_at == 1
    # dropped for the whole copy, built again after it: the night's rows are found by index
    assert query_all(
        warehouse,
        "select tablename from pg_indexes where schemaname = 'staging' and indexname = tablename || '_loaded_at' "
        "order by 1",
    ) == [(table,) for table in sorted(KEYS)]


def test_a_load_killed_mid_copy_changes_nothing_and_its_rerun_loads_once(source, use_warehouse):
    warehouse = use_warehouse("warehouse_killed")
    load("night_1", NIGHTS[0])
    with psycopg.connect(warehouse) as blocker:
        # Hold the staged order lines (reads allowed) so the night-2 load stops inside its transaction,
        # after its rows streamed into the warehouse and before they replace the staged ones.
        blocker.execute("lock table staging.order_line in exclusive mode")
        extraction = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "import datetime as dt, sys; from include.luigi_tasks.extract_source import extract_source; "
                "extract_source('night_2', interval=(dt.datetime.fromisoformat(sys.argv[1]), "
                "dt.datetime.fromisoformat(sys.argv[2])), as_of=dt.datetime.fromisoformat(sys.argv[3]))",
                *(moment.isoformat() for moment in night(NIGHTS[1])),
                AS_OF.isoformat(),
            ],
            env={**os.environ, "PYTHONPATH": str(config.PROJECT_ROOT)},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            deadline = time.monotonic() + 120
            while not query_one(
                warehouse,
                "select count(*) from pg_stat_activity where wait_event_type = 'Lock' and query ilike %s",
                ("%delete from%staging%order_line%pacbook_incoming%",),
            )[0]:
                assert extraction.poll() is None, "the extraction ended before it reached the copy"
                assert time.monotonic() < deadline, "the extraction never got past the order lines' stream"
                time.sleep(0.2)
        finally:
            os.killpg(extraction.pid, signal.SIGKILL)
            extraction.wait()
        blocker.rollback()
    # the killed load left the night-1 rows of order_line, and no record of night 2 for it
    assert "order_line" not in load_modes(warehouse, "night_2")
    assert_lines_equal_source_up_to(source, warehouse, NIGHTS[0])

    load("night_2", NIGHTS[1])  # the rerun of the same run
    assert_staging_equals_source_up_to(source, warehouse, NIGHTS[1])
    assert query_one(warehouse, "select count(*) from audit.extract_load where run_id = 'night_2'")[0] == len(
        config.SOURCE_TABLES
    )


def assert_lines_equal_source_up_to(source: str, warehouse: str, day: dt.date) -> None:
    end = night(day)[1].replace(tzinfo=None)
    expected = fingerprint(source, EXPECTED_SOURCE_ROWS["order_line"], "order_line", {"end": end})
    assert fingerprint(warehouse, "select * from staging.order_line", "order_line") == expected


def test_a_night_validates_its_own_rows_and_every_reference(source, use_warehouse, monkeypatch):
    warehouse = use_warehouse("warehouse_validation_scope")
    monkeypatch.setenv("PACBOOK_MAX_REJECTED_SHARE", "0.5")  # one bad line of the night's four is 25 %
    load("night_1", NIGHTS[0])
    with psycopg.connect(source) as conn:
        # a bad line in the night's increment, and a customer whose email breaks: the customer is
        # quarantined tonight, so his old orders (validated on night 1) now name no customer
        add_order(conn, 9_200_000, dt.datetime.combine(NIGHTS[1], dt.time(11)))
        conn.execute("update order_line set price = -5 where line_id = (select max(line_id) from order_line)")
        customer, old_orders = conn.execute(
            """
            select customer_id, array_agg(order_id order by order_id) from cust_order
            where order_date < %s and customer_id <> (select customer_id from cust_order order by order_id limit 1)
            group by customer_id order by customer_id limit 1
            """,
            (night(NIGHTS[0])[1].replace(tzinfo=None),),
        ).fetchone()
        conn.execute("update customer set email = 'not-an-address' where customer_id = %s", (customer,))
    load("night_2", NIGHTS[1])

    checked = dict(
        query_all(
            warehouse,
            "select table_name, new_rows_checked from audit.staging_validation where run_id = 'night_2' "
            "and table_name = any(%s)",
            (list(KEYS),),
        )
    )
    # the rules about a row itself look at the night's rows only
    assert checked == {table: loaded for table, (_, loaded) in load_modes(warehouse, "night_2").items()}
    assert checked["order_line"] < query_one(warehouse, "select count(*) from staging.order_line")[0] / 10
    rejected = query_all(
        warehouse,
        "select source_name, rule, rejected_rows from audit.rejected_rows where run_id = 'night_2' "
        "order by source_name, rule",
    )
    old_lines = query_one(source, "select count(*) from order_line where order_id = any(%s)", (old_orders,))[0]
    assert ("order_line", "price_in_range", 1) in rejected
    assert ("customer", "email_shape", 1) in rejected
    # the references are checked on every row: the old orders of the quarantined customer follow him
    assert ("cust_order", "customer_id_known", len(old_orders)) in rejected
    assert ("order_line", "order_id_known", old_lines) in rejected
    quarantined = query_all(
        warehouse,
        "select (source_row->>'order_id')::int from quarantine.cust_order where run_id = 'night_2' order by 1",
    )
    assert [order for (order,) in quarantined] == old_orders
    assert not query_one(warehouse, "select count(*) from staging.cust_order where customer_id = %s", (customer,))[0]
    # The night's own rows rejected are told apart from the older rows the customer took along: the
    # threshold limits the first; the run's audit writes every row of the night the rules admitted.
    recorded = dict(
        (table, counts)
        for table, *counts in query_all(
            warehouse,
            "select table_name, new_rows_rejected, rows_rejected from audit.staging_validation "
            "where run_id = 'night_2'",
        )
    )
    assert recorded["order_line"] == [1, 1 + old_lines]
    assert recorded["cust_order"] == [0, len(old_orders)]
    night_counts = rows_by_table(warehouse, "night_2")
    lines_read = load_modes(warehouse, "night_2")["order_line"][1]
    assert night_counts["order_line"] == {"read": lines_read, "rejected": 1 + old_lines, "written": lines_read - 1}
    assert night_counts["cust_order"]["written"] == night_counts["cust_order"]["read"]


def test_the_rejected_share_of_a_night_is_that_of_its_own_rows(source, use_warehouse, monkeypatch):
    """One bad line among a night's few is over a 1% threshold, though it is far under 1% of the table."""
    warehouse = use_warehouse("warehouse_rejected_share")
    load("night_1", NIGHTS[0])
    with psycopg.connect(source) as conn:
        add_order(conn, 9_200_000, dt.datetime.combine(NIGHTS[1], dt.time(11)))
        conn.execute("update order_line set price = -5 where line_id = (select max(line_id) from order_line)")
    monkeypatch.setenv("PACBOOK_MAX_REJECTED_SHARE", "0.01")
    with pytest.raises(TooManyRejectedRowsError) as failure:
        load("night_2", NIGHTS[1])
    night_lines = load_modes(warehouse, "night_2")["order_line"][1]
    all_lines = query_one(warehouse, "select count(*) from staging.order_line")[0] + 1
    assert night_lines < 100 < all_lines, (night_lines, all_lines)
    assert f"order_line: 1 of {night_lines} ({1 / night_lines:.1%})" in str(failure.value)
    assert "cust_order" not in str(failure.value)


def test_small_tables_are_compared_and_copied_again_only_when_they_changed(source, use_warehouse):
    warehouse = use_warehouse("warehouse_small_tables")
    load("night_1", NIGHTS[0])
    with psycopg.connect(source) as conn:
        customer = conn.execute("select max(customer_id) from customer").fetchone()[0]
        conn.execute("update customer set email = 'moved.on@example.org' where customer_id = %s", (customer,))
    load("night_2", NIGHTS[1])
    modes = dict(
        query_all(
            warehouse,
            "select table_name, load_mode from audit.extract_load "
            "where run_id = 'night_2' and not table_name = any(%s)",
            (list(KEYS),),
        )
    )
    assert modes.pop("customer") == "full"
    assert set(modes.values()) == {"unchanged"}, modes
    assert query_one(warehouse, "select email from staging.customer where customer_id = %s", (customer,)) == (
        "moved.on@example.org",
    )
    # unchanged tables keep the copy they had, row for row
    for table in ("book", "address", "customer_address"):
        assert query_one(warehouse, f"select count(*) from staging.{table}") == query_one(
            source, f"select count(*) from public.{table}"
        )
    load("night_3", NIGHTS[2])
    assert query_one(
        warehouse, "select count(*) from audit.extract_load where run_id = 'night_3' and load_mode = 'unchanged'"
    )[0] == len(config.SOURCE_TABLES) - len(KEYS)
    load("refresh", NIGHTS[2], full_refresh=True)
    assert query_one(
        warehouse, "select count(*) from audit.extract_load where run_id = 'refresh' and load_mode = 'full'"
    )[0] == len(config.SOURCE_TABLES)
