"""Bad input injected into a real PacBook source: every kind is caught, named in the log, counted,
and the good rows still load (issue 6, validation and quarantine)."""

from __future__ import annotations

import psycopg
import pytest

from include.luigi_tasks.extract_source import ExtractionFailedError, extract_source
from include.pacbook import config
from include.pacbook.source_generator import generate_source
from include.pacbook.validation import TooManyRejectedRowsError
from tests.conftest import query_all, query_one

# (table, rule) -> rows each injection below must put in quarantine, and nothing else may be.
EXPECTED_REJECTIONS = {
    ("order_line", "key_not_null"): 1,
    ("order_line", "duplicate_row"): 1,
    ("customer", "conflicting_key"): 2,
    ("order_line", "order_id_known"): 1,
    ("order_line", "price_in_range"): 2,
    ("cust_order", "order_date_plausible"): 2,
    ("customer", "last_name_readable"): 1,
    ("customer", "email_present"): 1,
    ("customer", "email_shape"): 1,
    ("cust_order", "customer_id_present"): 1,
    ("order_history", "status_id_known"): 1,
    ("order_history", "status_date_present"): 1,
    ("shipping_method", "cost_in_range"): 1,
    ("book", "title_readable"): 1,
    ("book", "title_present"): 1,
    ("order_line", "book_id_known"): 1,
}


def _drop_constraints(conn) -> None:
    """A source that lost its constraints is exactly where bad rows come from."""
    for table, constraint in conn.execute(
        "select conrelid::regclass::text, conname from pg_constraint "
        "where connamespace = 'public'::regnamespace and contype in ('p', 'f', 'u') order by contype = 'p'"
    ).fetchall():
        conn.execute(
            psycopg.sql.SQL("alter table {} drop constraint {}").format(
                psycopg.sql.Identifier(table), psycopg.sql.Identifier(constraint)
            )
        )
    for table, column in conn.execute(
        "select table_name, column_name from information_schema.columns "
        "where table_schema = 'public' and is_nullable = 'NO'"
    ).fetchall():
        conn.execute(
            psycopg.sql.SQL("alter table {} alter column {} drop not null").format(
                psycopg.sql.Identifier(table), psycopg.sql.Identifier(column)
            )
        )


def _inject_bad_rows(conn) -> None:
    order_id, customer_id, method_id, address_id = conn.execute(
        "select order_id, customer_id, shipping_method_id, dest_address_id from cust_order order by order_id limit 1"
    ).fetchone()
    book_id = conn.execute("select min(book_id) from book").fetchone()[0]
    statements = [
        # NULL key
        ("insert into order_line values (null, %s, %s, 10.00)", (order_id, book_id)),
        # an exact duplicate of a line
        ("insert into order_line select * from order_line where line_id = (select min(line_id) from order_line)", ()),
        # two different customers claiming one id
        ("insert into customer values (9000001, 'Ann', 'Lee', 'ann@example.com')", ()),
        ("insert into customer values (9000001, 'Bob', 'Ray', 'bob@example.com')", ()),
        # an orphan line
        ("insert into order_line values (9000001, 99999999, %s, 10.00)", (book_id,)),
        # negative and absurd prices
        ("insert into order_line values (9000002, %s, %s, -5.00)", (order_id, book_id)),
        ("insert into order_line values (9000003, %s, %s, 999.99)", (order_id, book_id)),
        # a future and an ancient order date
        (
            "insert into cust_order values (9000001, now() + interval '30 days', %s, %s, %s)",
            (customer_id, method_id, address_id),
        ),
        ("insert into cust_order values (9000002, '1970-01-01', %s, %s, %s)", (customer_id, method_id, address_id)),
        # broken encoding, empty string, bad email shape
        ("insert into customer values (9000002, 'Jürgen', 'M\ufffdller', 'jm@example.com')", ()),
        ("insert into customer values (9000003, 'No', 'Mail', '')", ()),
        ("insert into customer values (9000004, 'Odd', 'Mail', 'not-an-email')", ()),
        # an order without its customer
        ("insert into cust_order values (9000003, now() - interval '1 day', null, %s, %s)", (method_id, address_id)),
        # a status that does not exist, and a status event without a date
        ("insert into order_history values (9000001, %s, 99, now() - interval '1 day')", (order_id,)),
        ("insert into order_history values (9000002, %s, 1, null)", (order_id,)),
        # a shipping method with a negative cost
        ("insert into shipping_method values (99, 'Teleport', -1.00)", ()),
        # a title with a control character, and an empty title
        ("insert into book values (9000001, E'Bad\\x07Title', '9780000000001', null, 100, '2020-01-01', null)", ()),
        ("insert into book values (9000002, '  ', '9780000000002', null, 100, '2020-01-01', null)", ()),
        # a line for a book that does not exist
        ("insert into order_line values (9000004, %s, 99999999, 12.00)", (order_id,)),
    ]
    for statement, params in statements:
        conn.execute(statement, params)


@pytest.fixture(scope="module")
def dirty_source(postgres) -> str:
    uri = postgres.fresh_database("source_dirty")
    generate_source(uri, scale=0.05, seed=11)
    with psycopg.connect(uri) as conn:
        _drop_constraints(conn)
        _inject_bad_rows(conn)
    return uri


@pytest.fixture(scope="module")
def validated_warehouse(postgres, dirty_source):
    warehouse = postgres.fresh_database("warehouse_dirty")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("AIRFLOW_CONN_PACBOOK_SOURCE", dirty_source)
        env.setenv("AIRFLOW_CONN_PACBOOK_WAREHOUSE", warehouse)
        # one bad shipping method is 20 % of that small table: over the default share, so allowed here
        env.setenv("PACBOOK_MAX_REJECTED_SHARE", "0.5")
        rows_copied = extract_source("night_dirty")
    return warehouse, rows_copied


def test_every_kind_of_bad_row_is_quarantined_and_counted_by_its_rule(validated_warehouse):
    warehouse, _ = validated_warehouse
    counted = {
        (t, r): n
        for t, r, n in query_all(warehouse, "select source_name, rule, rejected_rows from audit.rejected_rows")
    }
    assert counted == EXPECTED_REJECTIONS
    assert len(EXPECTED_REJECTIONS) >= 15
    for (table, rule), rows in EXPECTED_REJECTIONS.items():
        quarantined = query_one(
            warehouse,
            psycopg.sql.SQL("select count(*), min(run_id), min(reason) from {} where rule = %s").format(
                psycopg.sql.Identifier("quarantine", table)
            ),
            (rule,),
        )
        assert quarantined[:2] == (rows, "night_dirty"), (table, rule)
        assert quarantined[2], f"quarantine.{table} rows of rule {rule} carry no reason"


def test_the_raw_row_is_kept_in_quarantine(validated_warehouse):
    warehouse, _ = validated_warehouse
    raw = query_all(warehouse, "select source_row from quarantine.customer where rule = 'conflicting_key' order by 1")
    assert [row[0]["email"] for row in raw] == ["ann@example.com", "bob@example.com"]
    assert (
        query_one(
            warehouse,
            "select source_row->>'price' from quarantine.order_line where rule = 'price_in_range' "
            "and (source_row->>'price')::numeric < 0",
        )[0]
        == "-5.00"
    )


def test_good_rows_still_load_and_nothing_is_lost(validated_warehouse, dirty_source):
    warehouse, rows_copied = validated_warehouse
    rejected = {}
    for (table, _), rows in EXPECTED_REJECTIONS.items():
        rejected[table] = rejected.get(table, 0) + rows
    for table in config.SOURCE_TABLES:
        table_id = psycopg.sql.Identifier
        in_source = query_one(dirty_source, psycopg.sql.SQL("select count(*) from public.{}").format(table_id(table)))[
            0
        ]
        in_staging = query_one(warehouse, psycopg.sql.SQL("select count(*) from staging.{}").format(table_id(table)))[0]
        assert rows_copied[table] == in_source, table
        # every source row is either in staging or in quarantine: none dropped, none doubled
        assert in_staging + rejected.get(table, 0) == in_source, table
    checked = dict(query_all(warehouse, "select table_name, rows_rejected from audit.staging_validation"))
    assert {t: n for t, n in checked.items() if n} == rejected


def test_the_log_names_the_table_and_rule_of_each_rejection(postgres, dirty_source, monkeypatch, caplog):
    warehouse = postgres.fresh_database("warehouse_dirty_log")
    monkeypatch.setenv("AIRFLOW_CONN_PACBOOK_SOURCE", dirty_source)
    monkeypatch.setenv("AIRFLOW_CONN_PACBOOK_WAREHOUSE", warehouse)
    monkeypatch.setenv("PACBOOK_MAX_REJECTED_SHARE", "0.5")
    caplog.set_level("WARNING", logger="pacbook.validation")
    extract_source("night_dirty_log")
    log = caplog.text
    for table, rule in EXPECTED_REJECTIONS:
        assert f"of {table}: rule {rule} " in log, f"the log does not name {table}/{rule}"


def test_too_many_rejected_rows_fail_the_run_with_the_tables_named(postgres, dirty_source, monkeypatch):
    warehouse = postgres.fresh_database("warehouse_dirty_threshold")
    monkeypatch.setenv("AIRFLOW_CONN_PACBOOK_SOURCE", dirty_source)
    monkeypatch.setenv("AIRFLOW_CONN_PACBOOK_WAREHOUSE", warehouse)
    monkeypatch.setenv("PACBOOK_MAX_REJECTED_SHARE", "0.002")
    with pytest.raises(TooManyRejectedRowsError, match=r"over the threshold of 0\.2%.*customer: 5 of") as failure:
        extract_source("night_threshold")
    assert "shipping_method" in str(failure.value)
    # counted all the same, and a retry fails the same way instead of passing on the recorded validation
    assert query_one(warehouse, "select sum(rejected_rows) from audit.rejected_rows")[0] == sum(
        EXPECTED_REJECTIONS.values()
    )
    with pytest.raises(TooManyRejectedRowsError):
        extract_source("night_threshold")


@pytest.mark.parametrize(
    ("damage", "table", "message"),
    [
        ("alter table customer drop column email", "customer", r"customer no longer matches staging.customer.*email"),
        ("alter table order_status rename to order_statuses", "order_status", r"public.order_status does not exist"),
        ("truncate order_history", "order_history", r"public.order_history is empty"),
    ],
    ids=["dropped_column", "renamed_table", "emptied_table"],
)
def test_a_broken_source_table_fails_by_name_keeps_its_last_copy_and_the_rest_load(
    postgres, monkeypatch, damage, table, message
):
    source = postgres.fresh_database("source_damaged")
    generate_source(source, scale=0.02, seed=5)
    warehouse = postgres.fresh_database("warehouse_damaged")
    monkeypatch.setenv("AIRFLOW_CONN_PACBOOK_SOURCE", source)
    monkeypatch.setenv("AIRFLOW_CONN_PACBOOK_WAREHOUSE", warehouse)
    extract_source("night_1")
    before = query_one(
        warehouse, psycopg.sql.SQL("select count(*) from staging.{}").format(psycopg.sql.Identifier(table))
    )[0]
    with psycopg.connect(source) as conn:
        conn.execute(damage)
        conn.execute("insert into publisher values (9000001, 'A New Publisher')")

    with pytest.raises(ExtractionFailedError, match=message):
        extract_source("night_2")
    after = query_one(
        warehouse, psycopg.sql.SQL("select count(*) from staging.{}").format(psycopg.sql.Identifier(table))
    )[0]
    assert after == before > 0
    assert query_one(warehouse, "select count(*) from staging.publisher where publisher_id = 9000001")[0] == 1
    assert (
        query_one(
            warehouse,
            "select count(*) from audit.extract_failure where run_id = 'night_2' and table_name = %s",
            (table,),
        )[0]
        >= 1
    )
