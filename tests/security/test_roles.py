"""Each role may do its job and nothing else: every denial is proven by logging in as the role."""

from __future__ import annotations

import psycopg
import pytest
from psycopg import sql

from include.luigi_tasks.extract_source import extract_source
from include.pacbook import config
from include.pacbook.privileges import apply_privileges
from include.pacbook.session_roles import connect_source
from tests.security.conftest import pipeline_connections, role_uri


def run_as(uri: str, statement: str, params: tuple = ()) -> list[tuple]:
    """Runs one statement in a transaction that is always rolled back; returns its rows, if any."""
    with psycopg.connect(uri) as conn:
        try:
            cursor = conn.execute(statement, params)
            return cursor.fetchall() if cursor.description else []
        finally:
            conn.rollback()


def denial(uri: str, statement: str, *, read_write: bool = False) -> str:
    """The error of a statement the role must not run; fails the test when the statement succeeds."""
    try:
        with psycopg.connect(uri) as conn:
            if read_write:  # leave the role's read-only default aside: the grants must stop it
                conn.execute("set transaction read write")
            conn.execute(statement)
            conn.rollback()
    except (psycopg.errors.InsufficientPrivilege, psycopg.OperationalError) as error:
        message = str(error)
        assert "permission denied" in message or "must be owner" in message, message
        return message
    pytest.fail(f"statement was allowed but must be denied: {statement}")


def assert_reads_no_table_of(role_uri: str, admin_uri: str, schema: str) -> None:
    tables = relations(admin_uri, schema)
    assert tables, f"schema {schema} is empty: nothing would be proven"
    for table in tables:
        denial(role_uri, f"select * from {qualified(schema, table)} limit 1")


def relations(uri: str, schema: str) -> list[str]:
    """Every table and view of a schema, seen by the administrator."""
    with psycopg.connect(uri) as conn:
        rows = conn.execute(
            "select table_name from information_schema.tables where table_schema = %s order by 1", (schema,)
        ).fetchall()
    return [row[0] for row in rows]


def qualified(schema: str, table: str) -> str:
    return sql.Identifier(schema, table).as_string()


# --- extractor (source)


def test_extractor_reads_every_source_table(secured):
    extractor = secured.source_as(secured.roles.extractor)
    for table in config.SOURCE_TABLES:
        admin_count = run_as(secured.admin_source, f"select count(*) from public.{table}")[0][0]
        assert run_as(extractor, f"select count(*) from public.{table}")[0][0] == admin_count > 0, table
    assert run_as(extractor, "show default_transaction_read_only") == [("on",)]


@pytest.mark.parametrize(
    "statement",
    [
        "insert into public.country (country_id, country_name) values (999999, 'Atlantis')",
        "update public.customer set email = 'x@example.org'",
        "delete from public.order_line",
        "truncate public.order_history",
        "create table public.extractor_table (id int)",
        "alter table public.book add column extractor_column int",
        "drop table public.publisher cascade",
        "create schema extractor_schema",
    ],
)
def test_extractor_cannot_change_the_source(secured, statement):
    denial(secured.source_as(secured.roles.extractor), statement, read_write=True)


def test_extractor_reads_no_other_table_of_the_source(secured):
    with psycopg.connect(secured.admin_source, autocommit=True) as conn:
        conn.execute("create table if not exists public.payroll (employee text, salary numeric)")
    denial(secured.source_as(secured.roles.extractor), "select * from public.payroll")


def test_an_administrators_source_login_still_reads_as_the_extractor(postgres, secured, monkeypatch):
    """Given an administrator's login to the source (as `make run` has), the pipeline reads it as the
    extraction role: a table the role may not read stops the extraction, naming the table."""
    monkeypatch.setattr(config, "SOURCE_READ_ROLE", secured.roles.extractor)
    with psycopg.connect(secured.admin_source, autocommit=True) as conn:
        conn.execute("create table if not exists public.payroll (employee text, salary numeric)")
    with connect_source(secured.admin_source) as session:
        assert session.execute("select current_user").fetchone()[0] == secured.roles.extractor
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            session.execute("select * from public.payroll")
    warehouse = postgres.fresh_database("warehouse_admin_source")
    secured.databases.append(warehouse)
    extractor = sql.Identifier(secured.roles.extractor)
    with psycopg.connect(secured.admin_source, autocommit=True) as conn:
        conn.execute(sql.SQL("revoke select on public.author from {}").format(extractor))
    try:
        with pipeline_connections(secured.admin_source, warehouse), pytest.raises(Exception) as failure:
            extract_source("security_admin_source")
        assert "permission denied for table author" in str(failure.value), str(failure.value)
    finally:
        with psycopg.connect(secured.admin_source, autocommit=True) as conn:
            conn.execute(sql.SQL("grant select on public.author to {}").format(extractor))


# --- bi_reader


def test_bi_reader_reads_every_mart(secured):
    bi_reader = secured.warehouse_as(secured.roles.bi_reader)
    marts = relations(secured.admin_warehouse, "marts")
    assert {"monthly_sales", "customer_repeat_orders", "customer_segments"} <= set(marts)
    for mart in marts:
        expected = run_as(secured.admin_warehouse, f"select count(*) from {qualified('marts', mart)}")
        assert run_as(bi_reader, f"select count(*) from {qualified('marts', mart)}") == expected, mart
    assert run_as(bi_reader, "select sum(gross_revenue) from marts.monthly_sales")[0][0] > 0


@pytest.mark.parametrize("schema", ["dwh", "staging", "audit", "quarantine"])
def test_bi_reader_reads_nothing_outside_marts(secured, schema):
    assert_reads_no_table_of(secured.warehouse_as(secured.roles.bi_reader), secured.admin_warehouse, schema)


def test_bi_reader_cannot_change_marts(secured):
    bi_reader = secured.warehouse_as(secured.roles.bi_reader)
    denial(bi_reader, "delete from marts.monthly_sales")
    denial(bi_reader, "create table marts.bi_table (id int)")


# --- pii_reader


@pytest.mark.parametrize("schema", ["staging", "marts", "audit", "quarantine"])
def test_pii_reader_reads_nothing_outside_dwh(secured, schema):
    """Staging and quarantine hold personal data in plain text: decrypting dwh is pii_reader's only way to it."""
    assert_reads_no_table_of(secured.warehouse_as(secured.roles.pii_reader), secured.admin_warehouse, schema)


def test_pii_reader_cannot_change_dwh(secured):
    pii_reader = secured.warehouse_as(secured.roles.pii_reader)
    assert run_as(pii_reader, "select count(*) from dwh.dim_customer")[0][0] > 0
    denial(pii_reader, "update dwh.dim_customer set is_current = false", read_write=True)
    denial(pii_reader, "delete from dwh.fct_sales", read_write=True)
    denial(pii_reader, "create table dwh.pii_copy (id int)", read_write=True)


# --- loader


def test_loader_writes_staging_audit_and_quarantine(secured):
    loader = secured.warehouse_as(secured.roles.loader)
    with psycopg.connect(loader) as conn:
        conn.execute("insert into audit.extract_failure (run_id, table_name, error) values ('t', 'customer', 'test')")
        conn.execute("create table quarantine.loader_probe (id int)")
        conn.execute("create table staging.loader_probe (id int)")
        # tables the administrator created before: the loader empties and refills them
        conn.execute("truncate staging.order_line")
        assert conn.execute("select count(*) from staging.order_line").fetchone()[0] == 0
        conn.rollback()


@pytest.mark.parametrize(
    "statement",
    [
        "create table dwh.loader_table (id int)",
        "create table marts.loader_table (id int)",
        "insert into marts.monthly_sales (month) values ('2024-01-01')",
        "delete from dwh.fct_sales",
        "select * from dwh.dim_customer",
        "drop view staging.stg_pacbook__customer",
    ],
)
def test_loader_cannot_write_dwh_or_marts(secured, statement):
    denial(secured.warehouse_as(secured.roles.loader), statement)


def test_extraction_runs_as_the_loader(postgres, secured):
    """The whole extraction (schemas, staging tables, validation, quarantine, audit) needs no more."""
    warehouse = postgres.fresh_database("warehouse_loader")
    secured.databases.append(warehouse)
    apply_privileges(secured.admin_source, warehouse, secured.passwords, secured.roles)
    loader = role_uri(warehouse, secured.roles.loader, secured.passwords[secured.roles.loader])
    with pipeline_connections(secured.source_as(secured.roles.extractor), loader):
        extract_source("security_loader_run")
    for table in config.SOURCE_TABLES:
        source_rows = run_as(secured.admin_source, f"select count(*) from public.{table}")[0][0]
        recorded = run_as(warehouse, "select rows_loaded from audit.extract_load where table_name = %s", (table,))
        in_staging = run_as(warehouse, f"select count(*) from staging.{table}")[0][0]
        rejected = run_as(
            warehouse,
            "select coalesce(sum(rows_rejected), 0) from audit.staging_validation where table_name = %s",
            (table,),
        )[0][0]
        assert recorded == [(source_rows,)] and in_staging + rejected == source_rows, table
    owners = run_as(
        warehouse, "select distinct tableowner from pg_tables where schemaname in ('staging', 'audit', 'quarantine')"
    )
    assert owners == [(secured.roles.loader,)]


# --- transformer


@pytest.mark.parametrize(
    "statement",
    [
        "insert into public.country (country_id, country_name) values (999998, 'Lemuria')",
        "update public.order_line set price = 0",
        "delete from public.customer",
        "create table public.transformer_table (id int)",
    ],
)
def test_transformer_cannot_write_the_source(secured, statement):
    denial(secured.source_as(secured.roles.transformer), statement)


def test_transformer_cannot_write_the_loaders_schemas(secured):
    transformer = secured.warehouse_as(secured.roles.transformer)
    denial(transformer, "insert into audit.extract_load values ('x', 'y', 1, now(), now())")
    denial(transformer, "truncate staging.customer")
    denial(transformer, "create table audit.transformer_table (id int)")
    denial(transformer, "create table quarantine.transformer_table (id int)")


def test_transformer_records_its_builds_only_through_the_recording_function(secured):
    """State-aware builds: dbt's role reads when staging changed and records what it built, and that is all."""
    transformer = secured.warehouse_as(secured.roles.transformer)
    with psycopg.connect(transformer) as conn:
        assert conn.execute("select count(*) from audit.staging_change").fetchone()[0] >= len(config.SOURCE_TABLES)
        conn.execute("select audit.record_dbt_build('model.pacbook.probe', 'fingerprint', now(), 'probe_run')")
        recorded = conn.execute("select run_id from audit.dbt_node_build where unique_id = 'model.pacbook.probe'")
        assert recorded.fetchone() == ("probe_run",)
        conn.rollback()
    denial(transformer, "insert into audit.dbt_node_build values ('model.pacbook.x', 'f', now(), 'r')")
    denial(transformer, "delete from audit.dbt_node_build")
    denial(transformer, "update audit.staging_change set changed_at = now()")


# --- later objects, repeat runs


def test_tables_created_later_are_readable_by_their_readers(secured):
    """Default privileges: new marts by dbt (the transformer) or by the administrator reach bi_reader."""
    with psycopg.connect(secured.warehouse_as(secured.roles.transformer), autocommit=True) as conn:
        conn.execute("create table if not exists marts.later_by_transformer as select 1 as id")
    with psycopg.connect(secured.admin_warehouse, autocommit=True) as conn:
        conn.execute("create table if not exists marts.later_by_owner as select 2 as id")
    try:
        bi_reader = secured.warehouse_as(secured.roles.bi_reader)
        assert run_as(bi_reader, "select id from marts.later_by_transformer") == [(1,)]
        assert run_as(bi_reader, "select id from marts.later_by_owner") == [(2,)]
    finally:
        with psycopg.connect(secured.admin_warehouse, autocommit=True) as conn:
            conn.execute("drop table marts.later_by_transformer, marts.later_by_owner")


PRIVILEGE_STATE = """
select 'database', datname, datacl::text from pg_database where datname = current_database()
union all
select 'schema', nspname, nspacl::text from pg_namespace
union all
select 'relation', relnamespace::regnamespace || '.' || relname, relacl::text from pg_class where relkind in ('r', 'v')
union all
select 'default', defaclrole::regrole || ' ' || coalesce(defaclnamespace::regnamespace::text, ''), defaclacl::text
from pg_default_acl
union all
select 'function', oid::regprocedure::text, proacl::text from pg_proc where proname = 'decrypt_pii'
order by 1, 2, 3
"""


def test_apply_privileges_is_idempotent(secured):
    before = run_as(secured.admin_warehouse, PRIVILEGE_STATE), run_as(secured.admin_source, PRIVILEGE_STATE)
    apply_privileges(secured.admin_source, secured.admin_warehouse, secured.passwords, secured.roles)
    after = run_as(secured.admin_warehouse, PRIVILEGE_STATE), run_as(secured.admin_source, PRIVILEGE_STATE)
    assert after == before
    # the passwords were set again and still open the doors
    assert run_as(secured.warehouse_as(secured.roles.bi_reader), "select current_user") == [(secured.roles.bi_reader,)]
