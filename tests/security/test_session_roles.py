"""Each part of the pipeline works as its role whatever login its connection gives (session_roles.py),
and a warehouse built before the roles is handed over to them (privileges._hand_over)."""

from __future__ import annotations

import logging
import os
import secrets
import subprocess
import sys

import psycopg
from psycopg import sql

from include.pacbook import session_roles
from include.pacbook.privileges import apply_source_privileges, apply_warehouse_privileges
from include.pacbook.session_roles import (
    LOADING,
    READING_THE_MARTS,
    READING_THE_SOURCE,
    TRANSFORMING,
    connect_source,
    role_to_take,
    uri_as,
)
from tests.conftest import ROLE_SETTINGS
from tests.security.conftest import role_uri
from tests.security.test_roles import denial, run_as


def test_an_administrators_login_works_as_each_parts_role(secured):
    expected = {LOADING: secured.roles.loader, TRANSFORMING: secured.roles.transformer}
    expected[READING_THE_MARTS] = secured.roles.bi_reader
    for part, role in expected.items():
        session = uri_as(secured.admin_warehouse, part)
        # `reset role` cannot leave it: the role is the session's own starting setting.
        assert run_as(session, "select current_user") == [(role,)], part.name
        with psycopg.connect(session) as conn:
            conn.execute("reset role")
            assert conn.execute("select current_user").fetchone() == (role,), part.name
    loading = uri_as(secured.admin_warehouse, LOADING)
    assert run_as(loading, "select count(*) from staging.cust_order")[0][0] > 0
    denial(loading, "select * from dwh.fct_sales limit 1")
    denial(loading, "create table dwh.loader_table (id int)")
    transforming = uri_as(secured.admin_warehouse, TRANSFORMING)
    denial(transforming, "delete from staging.cust_order")
    denial(transforming, "insert into audit.pipeline_run (dag_id, run_id, status) values ('x', 'y', 'running')")
    assert run_as(transforming, "select count(*) from quarantine.order_line")  # the reconciliation's read
    denial(uri_as(secured.admin_warehouse, READING_THE_MARTS), "select * from dwh.fct_sales limit 1")


def test_a_database_where_the_roles_were_not_granted_keeps_the_login(secured, postgres):
    """The project's roles exist on this server, but nobody granted them this warehouse (a server
    where apply_privileges never ran on it): the pipeline works as its login, as before the roles."""
    warehouse = postgres.fresh_database("warehouse_without_roles")
    secured.databases.append(warehouse)
    for part in (LOADING, TRANSFORMING, READING_THE_MARTS):
        assert role_to_take(warehouse, part) is None, part.name
        assert uri_as(warehouse, part) == warehouse


def test_a_pipeline_login_with_no_rights_of_its_own_works_through_its_roles(secured):
    """The deployment of docs/security.md: one NOINHERIT login for the pipeline's warehouse connection,
    granted the roles of its parts; by itself it reads nothing, and each part takes its role."""
    login, password = f"pacbook_pipeline_{secrets.token_hex(3)}", secrets.token_urlsafe(18)
    with psycopg.connect(secured.admin_warehouse, autocommit=True) as conn:
        conn.execute(
            sql.SQL("create role {} login noinherit password {}").format(sql.Identifier(login), sql.Literal(password))
        )
        # NOINHERIT: not even the roles' CONNECT reaches it, so it gets its own.
        database = sql.Identifier(conn.info.dbname)
        conn.execute(sql.SQL("grant connect on database {} to {}").format(database, sql.Identifier(login)))
        roles = (secured.roles.loader, secured.roles.transformer, secured.roles.bi_reader)
        conn.execute(
            sql.SQL("grant {} to {}").format(sql.SQL(", ").join(map(sql.Identifier, roles)), sql.Identifier(login))
        )
    try:
        pipeline = role_uri(secured.admin_warehouse, login, password)
        denial(pipeline, "select * from staging.cust_order limit 1")
        assert run_as(uri_as(pipeline, LOADING), "select current_user") == [(secured.roles.loader,)]
        assert run_as(uri_as(pipeline, LOADING), "select count(*) from staging.cust_order")[0][0] > 0
        assert run_as(uri_as(pipeline, TRANSFORMING), "select count(*) from dwh.fct_sales")[0][0] > 0
    finally:
        with psycopg.connect(secured.admin_warehouse, autocommit=True) as conn:
            conn.execute(sql.SQL("drop owned by {}").format(sql.Identifier(login)))
            conn.execute(sql.SQL("drop role {}").format(sql.Identifier(login)))


def test_apply_privileges_hands_an_administrators_warehouse_to_the_roles(secured, postgres, monkeypatch):
    """A warehouse the administrator's login built (make run before the roles) goes to the roles that
    rebuild it; what another login owns is left to its owner. Until then, the parts keep the login:
    as their roles they could not rebuild what it owns."""
    monkeypatch.setattr(session_roles, "ANSWER_SECONDS", 0)  # each question asked anew
    warehouse = postgres.fresh_database("warehouse_handed_over")
    secured.databases.append(warehouse)
    other = f"pacbook_other_{secrets.token_hex(3)}"
    with psycopg.connect(warehouse, autocommit=True) as conn:
        conn.execute(sql.SQL("create role {}").format(sql.Identifier(other)))
        for schema in ("staging", "audit", "quarantine", "dwh", "marts"):
            conn.execute(sql.SQL("create schema {}").format(sql.Identifier(schema)))
        conn.execute("create table staging.cust_order (order_id int primary key)")
        conn.execute("create view staging.stg_pacbook__cust_order as select * from staging.cust_order")
        conn.execute("create table audit.pipeline_run (run_id text)")
        conn.execute("create function audit.note() returns int language sql as 'select 1'")
        conn.execute("create table quarantine.order_line (row_key text)")
        conn.execute("create table dwh.fct_sales (line_id int)")
        conn.execute("create table marts.monthly_sales (month date)")
        conn.execute("create table marts.someone_elses (id int)")
        conn.execute(sql.SQL("alter table marts.someone_elses owner to {}").format(sql.Identifier(other)))
    try:
        with psycopg.connect(warehouse, autocommit=True) as conn:  # granted, but not handed over yet
            conn.execute(sql.SQL("grant create on schema staging to {}").format(sql.Identifier(secured.roles.loader)))
        assert role_to_take(warehouse, LOADING) is None
        apply_warehouse_privileges(warehouse, secured.roles)
        assert role_to_take(warehouse, LOADING) == secured.roles.loader
        owners = dict(
            run_as(
                warehouse,
                """
                select c.oid::regclass::text, pg_get_userbyid(c.relowner) from pg_class as c
                where c.relnamespace::regnamespace::text in ('staging', 'audit', 'quarantine', 'dwh', 'marts')
                  and c.relkind in ('r', 'v')
                union all
                select 'audit.note()', pg_get_userbyid(proowner) from pg_proc where oid = 'audit.note()'::regprocedure
                """,
            )
        )
        loader, transformer = secured.roles.loader, secured.roles.transformer
        assert owners == {
            "staging.cust_order": loader,
            "staging.stg_pacbook__cust_order": transformer,
            "audit.pipeline_run": loader,
            "audit.note()": loader,
            "quarantine.order_line": loader,
            "dwh.fct_sales": transformer,
            "marts.monthly_sales": transformer,
            "marts.someone_elses": other,
        }
        # Handed over, the tables are rebuilt by their roles: dbt replaces its view, the loader its table.
        transforming = uri_as(warehouse, TRANSFORMING)
        with psycopg.connect(transforming, autocommit=True) as conn:
            conn.execute(
                "create or replace view staging.stg_pacbook__cust_order as select order_id from staging.cust_order"
            )
            conn.execute("drop table marts.monthly_sales")
        with psycopg.connect(uri_as(warehouse, LOADING), autocommit=True) as conn:
            conn.execute("alter table staging.cust_order add column order_date date")
        # A second run finds nothing more to hand over.
        apply_warehouse_privileges(warehouse, secured.roles)
        assert run_as(
            warehouse, "select pg_get_userbyid(relowner) from pg_class where oid = 'marts.someone_elses'::regclass"
        ) == [(other,)]
    finally:
        with psycopg.connect(warehouse, autocommit=True) as conn:
            conn.execute(sql.SQL("drop owned by {} cascade").format(sql.Identifier(other)))
            conn.execute(sql.SQL("drop role {}").format(sql.Identifier(other)))


def test_the_privileges_command_lets_the_pipelines_logins_take_their_roles(secured, postgres, monkeypatch):
    """`python -m include.pacbook.privileges`, run with an administrator's URIs: the logins of the two
    pipeline connections may then take their parts' roles, and what the pipeline's login had built
    before is handed to the role that rebuilds it."""
    monkeypatch.setattr(session_roles, "ANSWER_SECONDS", 0)
    warehouse = postgres.fresh_database("warehouse_command")
    secured.databases.append(warehouse)
    logins = {name: (f"pacbook_{name}_{secrets.token_hex(3)}", secrets.token_urlsafe(18)) for name in ("src", "pipe")}
    with psycopg.connect(postgres.admin_uri, autocommit=True) as conn:
        for login, password in logins.values():
            conn.execute(
                sql.SQL("create role {} login password {}").format(sql.Identifier(login), sql.Literal(password))
            )
    pipe_login = logins["pipe"][0]
    with psycopg.connect(warehouse, autocommit=True) as conn:  # the pipeline's login built a table before
        conn.execute("create schema staging")
        conn.execute("create table staging.country (country_id int)")
        conn.execute(sql.SQL("alter table staging.country owner to {}").format(sql.Identifier(pipe_login)))
    source_uri, pipeline_uri = (
        role_uri(uri, *logins[name]) for name, uri in (("src", secured.admin_source), ("pipe", warehouse))
    )
    env = {
        **os.environ,
        "PACBOOK_SOURCE_ADMIN_URI": secured.admin_source,
        "PACBOOK_WAREHOUSE_ADMIN_URI": warehouse,
        "AIRFLOW_CONN_PACBOOK_SOURCE": source_uri,
        "AIRFLOW_CONN_PACBOOK_WAREHOUSE": pipeline_uri,
        **{f"PACBOOK_{setting}": getattr(secured.roles, field) for setting, field in ROLE_SETTINGS.items()},
    }
    try:
        done = subprocess.run(
            [sys.executable, "-m", "include.pacbook.privileges"], env=env, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, done.stdout + done.stderr
        assert f"login {pipe_login} may take {secured.roles.loader}" in done.stderr, done.stderr
        assert run_as(
            uri_as(pipeline_uri, LOADING),
            "select current_user, pg_get_userbyid(relowner) from pg_class where oid = 'staging.country'::regclass",
        ) == [(secured.roles.loader, secured.roles.loader)]
        assert role_to_take(pipeline_uri, TRANSFORMING) == secured.roles.transformer
        with connect_source(source_uri) as session:
            assert session.execute("select current_user").fetchone() == (secured.roles.extractor,)
        # Without an administrator's URIs, the command says which variables it needs.
        env.pop("PACBOOK_WAREHOUSE_ADMIN_URI")
        refused = subprocess.run(
            [sys.executable, "-m", "include.pacbook.privileges"], env=env, capture_output=True, text=True, timeout=120
        )
        assert refused.returncode != 0 and "PACBOOK_WAREHOUSE_ADMIN_URI not set" in refused.stderr, refused.stderr
    finally:
        for uri in (secured.admin_source, warehouse):
            with psycopg.connect(uri, autocommit=True) as conn:
                for login, _ in logins.values():
                    conn.execute(sql.SQL("drop owned by {} cascade").format(sql.Identifier(login)))
        with psycopg.connect(postgres.admin_uri, autocommit=True) as conn:
            for login, _ in logins.values():
                conn.execute(sql.SQL("drop role {}").format(sql.Identifier(login)))


def test_a_source_restored_after_the_privileges_is_granted_when_they_run_again(secured, postgres, caplog, monkeypatch):
    """docker compose's one-shot `pacbook-privileges` may run before the source is restored: the tables
    not there yet are named and the rest applies; until the role may read a table, the source part keeps
    its login; the next run grants what arrived."""
    monkeypatch.setattr(session_roles, "ANSWER_SECONDS", 0)
    source = postgres.fresh_database("source_not_restored")
    secured.databases.append(source)
    caplog.set_level(logging.INFO, logger="pacbook.privileges")
    apply_source_privileges(source, secured.roles)
    assert "may not read 15 source tables that do not exist yet" in caplog.text, caplog.text
    assert role_to_take(source, READING_THE_SOURCE) is None
    with psycopg.connect(source, autocommit=True) as conn:
        conn.execute("create table public.country (country_id int primary key, country_name text)")
        conn.execute("create table public.not_a_source_table (secret text)")
    caplog.clear()
    apply_source_privileges(source, secured.roles)
    assert "may not read 14 source tables" in caplog.text and "cust_order" in caplog.text, caplog.text
    assert "country" not in caplog.text.split("do not exist yet")[1]
    # One source table granted: the part reads as the role, which reads that table and nothing else.
    assert role_to_take(source, READING_THE_SOURCE) == secured.roles.extractor
    with psycopg.connect(source) as conn:
        granted = conn.execute(
            "select has_table_privilege(%(role)s, 'public.country', 'select'),"
            " has_table_privilege(%(role)s, 'public.not_a_source_table', 'select')",
            {"role": secured.roles.extractor},
        ).fetchone()
    assert granted == (True, False)  # the source tables, nothing else
