"""The container stack's database start-up, run natively: pacbook-db's first-start script, then the
one-shot `pacbook-privileges` with the environment docker-compose.yaml gives it, then the pipeline's
two logins (pacbook_reader, pacbook) reading and loading through their roles.

No Docker engine runs here, so the compose host `pacbook-db:5432` is a server of this test's own
(its script creates fixed role names, which must not meet the other tests' server), whose superuser
is given the administrator's password from `.env`: only the host and port differ from the stack.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from psycopg import sql

from include.luigi_tasks.extract_source import extract_source
from include.pacbook import embedded_postgres, session_roles
from include.pacbook.session_roles import LOADING, TRANSFORMING, connect_source, role_to_take
from include.pacbook.source_generator import generate_source
from tests.conftest import TEST_STATE
from tests.deploy.compose_file import ROOT, service_env

INIT_SCRIPT = ROOT / "docker" / "pacbook-db" / "initdb" / "10-pacbook-databases.sh"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def pacbook_db(compose) -> Iterator[embedded_postgres.EmbeddedServer]:
    """A new server, as the postgres image starts on an empty volume: the superuser with the
    administrator's password, then the init script."""
    root = TEST_STATE / f"pacbook-db-{secrets.token_hex(3)}"
    srv = embedded_postgres.start(embedded_postgres.server(root=root, port=_free_port(), disposable=True))
    try:
        database = service_env(compose["services"]["pacbook-db"])
        with psycopg.connect(srv.uri("postgres"), autocommit=True) as conn:
            for name in ("pacbook_source", "pacbook_warehouse"):  # the embedded server makes them; the script does
                conn.execute(sql.SQL("drop database {}").format(sql.Identifier(name)))
        script_env = {
            "PATH": f"{embedded_postgres.bin_dir()}:{os.environ['PATH']}",
            "PGHOST": "127.0.0.1",
            "PGPORT": str(srv.port),
            "PGPASSWORD": srv.password_file.read_text().strip(),
            "POSTGRES_USER": database["POSTGRES_USER"],
            "PACBOOK_DB_PASSWORD": database["PACBOOK_DB_PASSWORD"],
            "PACBOOK_READER_PASSWORD": database["PACBOOK_READER_PASSWORD"],
        }
        done = subprocess.run(["bash", str(INIT_SCRIPT)], env=script_env, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stdout + done.stderr
        with psycopg.connect(srv.uri("postgres"), autocommit=True) as conn:
            conn.execute(
                sql.SQL("alter role {} password {}").format(
                    sql.Identifier(database["POSTGRES_USER"]), sql.Literal(database["POSTGRES_PASSWORD"])
                )
            )
        yield srv
    finally:
        embedded_postgres.stop(srv)
        shutil.rmtree(root, ignore_errors=True)


def _here(uri: str, srv: embedded_postgres.EmbeddedServer) -> str:
    """The compose URI with pacbook-db:5432 replaced by this test's server."""
    parts = urlsplit(uri)
    assert (parts.hostname, parts.port) == ("pacbook-db", 5432), uri
    userinfo = parts.netloc.rpartition("@")[0]
    return urlunsplit(parts._replace(netloc=f"{userinfo}@127.0.0.1:{srv.port}"))


def _run_privileges_service(compose: dict, srv: embedded_postgres.EmbeddedServer) -> subprocess.CompletedProcess:
    service = compose["services"]["pacbook-privileges"]
    variables = service_env(service)
    env = {
        "PATH": os.environ["PATH"],
        "PYTHONPATH": str(ROOT),
        "HOME": os.environ.get("HOME", "/root"),
        **{
            name: _here(variables[name], srv)
            for name in (
                "PACBOOK_SOURCE_ADMIN_URI",
                "PACBOOK_WAREHOUSE_ADMIN_URI",
                "AIRFLOW_CONN_PACBOOK_SOURCE",
                "AIRFLOW_CONN_PACBOOK_WAREHOUSE",
            )
        },
    }
    command = [sys.executable if part == "python" else part for part in service["command"]]
    return subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_the_compose_stacks_logins_read_and_load_through_their_roles(compose, pacbook_db, monkeypatch):
    monkeypatch.setattr(session_roles, "ANSWER_SECONDS", 0)
    variables = service_env(compose["services"]["airflow-worker"])
    source_uri = _here(variables["AIRFLOW_CONN_PACBOOK_SOURCE"], pacbook_db)
    warehouse_uri = _here(variables["AIRFLOW_CONN_PACBOOK_WAREHOUSE"], pacbook_db)

    # `docker compose up` on a new volume: the source is still empty when the one-shot runs.
    first = _run_privileges_service(compose, pacbook_db)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "may not read 15 source tables that do not exist yet" in first.stderr, first.stderr
    assert "login pacbook may take pacbook_loader, pacbook_transformer, bi_reader" in first.stderr, first.stderr
    assert role_to_take(warehouse_uri, LOADING) == "pacbook_loader"
    assert role_to_take(warehouse_uri, TRANSFORMING) == "pacbook_transformer"

    # The demo profile's service fills the source as its owner; the one-shot, run again, grants it.
    owner = urlsplit(_here(variables["AIRFLOW_CONN_PACBOOK_WAREHOUSE"], pacbook_db))
    owner_source_uri = urlunsplit(owner._replace(path="/pacbook_source"))
    generate_source(owner_source_uri, scale=0.02, seed=5)
    with connect_source(source_uri) as session:  # not granted yet: the source part reads as its login
        assert session.execute("select current_user").fetchone() == ("pacbook_reader",)
    again = _run_privileges_service(compose, pacbook_db)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "do not exist yet" not in again.stderr, again.stderr
    with connect_source(source_uri) as session:
        assert session.execute("select current_user").fetchone() == ("pacbook_extractor",)

    # A night's extraction with the stack's two connections: staging is written as the loader.
    monkeypatch.setenv("AIRFLOW_CONN_PACBOOK_SOURCE", source_uri)
    monkeypatch.setenv("AIRFLOW_CONN_PACBOOK_WAREHOUSE", warehouse_uri)
    rows = extract_source(f"compose_privileges_{secrets.token_hex(3)}", full_refresh=True)
    assert rows["cust_order"] > 0 and rows["order_line"] > 0, rows
    with psycopg.connect(warehouse_uri) as conn:
        owners = dict(
            conn.execute(
                "select c.relname, pg_get_userbyid(c.relowner) from pg_class c"
                " join pg_namespace n on n.oid = c.relnamespace where n.nspname = 'staging' and c.relkind = 'r'"
            ).fetchall()
        )
    assert owners.get("cust_order") == "pacbook_loader", owners
    assert set(owners.values()) == {"pacbook_loader"}, owners
