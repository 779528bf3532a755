"""Shared fixtures: a PostgreSQL server of the tests' own, fresh databases, a real Airflow stack."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from include.pacbook import config, embedded_postgres
from include.pacbook.privileges import Roles

TEST_STATE = config.state_dir() / "test"
# The DagBag built in this process must not touch a developer's ~/airflow.
os.environ.setdefault("AIRFLOW_HOME", str(TEST_STATE / "airflow-pytest"))
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
# The PII key of this test session only (docs/security.md#the-key), never one from the caller's shell:
# dbt's customer snapshot encrypts with it, and the Airflow stacks of the e2e tests inherit it.
os.environ["AIRFLOW_CONN_PACBOOK_PII_KEY"] = json.dumps({"conn_type": "generic", "password": secrets.token_urlsafe(32)})


class PostgresForTests:
    """Creates throwaway databases on the tests' server and drops them at the end of the session."""

    def __init__(self, admin_uri: str):
        self.admin_uri = admin_uri
        self.created: list[str] = []

    def uri(self, dbname: str) -> str:
        parts = config.connection_parts(self.admin_uri)
        auth = f"{parts.user}:{parts.password}@" if parts.password else f"{parts.user}@"
        return f"postgresql://{auth}{parts.host}:{parts.port}/{dbname}"

    def fresh_database(self, prefix: str) -> str:
        name = f"{prefix}_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(self.admin_uri, autocommit=True) as conn:
            conn.execute(sql.SQL("create database {}").format(sql.Identifier(name)))
        self.created.append(name)
        return self.uri(name)

    def drop_all(self) -> None:
        with psycopg.connect(self.admin_uri, autocommit=True) as conn:
            for name in self.created:
                conn.execute(sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(name)))


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresForTests]:
    given = config.test_admin_uri()
    server = None
    if given:
        admin = given
    else:
        server = embedded_postgres.start(
            embedded_postgres.server(root=TEST_STATE / "postgres", port=config.test_postgres_port(), disposable=True)
        )
        admin = server.uri("postgres")
    pg = PostgresForTests(admin)
    try:
        yield pg
    finally:
        with contextlib.suppress(Exception):
            pg.drop_all()
        if server is not None:
            embedded_postgres.stop(server)


@pytest.fixture(scope="session")
def generated_source(postgres: PostgresForTests) -> str:
    """A small generated PacBook source (scale 0.05), shared read-only by the tests."""
    from include.pacbook.source_generator import generate_source

    uri = postgres.fresh_database("source_generated")
    generate_source(uri, scale=0.05, seed=7)
    return uri


@pytest.fixture(scope="session")
def real_source(postgres: PostgresForTests) -> str:
    """The real PacBook data, loaded with its own loader; skipped where ../shared is absent."""
    loader = config.real_data_dir() / "load.sh"
    if not loader.exists():
        pytest.skip(f"real PacBook data not present at {loader.parent}")
    uri = postgres.fresh_database("source_real")
    # The loader calls psql: take the one shipped with the embedded server so no client must be installed.
    env = {**os.environ, "PATH": f"{embedded_postgres.bin_dir()}{os.pathsep}{os.environ.get('PATH', '')}"}
    subprocess.run(["bash", str(loader), uri], check=True, capture_output=True, text=True, env=env)
    return uri


def query_one(uri: str, query: str, params: tuple = ()) -> tuple:
    with psycopg.connect(uri) as conn:
        return conn.execute(query, params).fetchone()


def query_all(uri: str, query: str, params: tuple = ()) -> list[tuple]:
    with psycopg.connect(uri) as conn:
        return conn.execute(query, params).fetchall()


@pytest.fixture
def output_dir(request) -> Path:
    path = config.PROJECT_ROOT / "test-output" / request.node.name
    path.mkdir(parents=True, exist_ok=True)
    return path


ConnectionSetter = Callable[[str, str], None]


def new_roles() -> Roles:
    """The project's roles under names of this test run's own: roles are server-wide, and a test must
    never touch the real ones on a server it shares."""
    suffix = uuid.uuid4().hex[:6]
    return Roles(**{name: f"{value}_{suffix}" for name, value in vars(Roles()).items()})


def drop_roles(postgres: PostgresForTests, roles: Roles, databases: list[str]) -> None:
    """Removes the test's roles: their grants and objects in each database first, then the roles."""
    with psycopg.connect(postgres.admin_uri) as conn:
        found = conn.execute("select rolname from pg_roles where rolname = any(%s)", (list(roles.all()),))
        created = {row[0] for row in found}
    for uri in databases:
        with psycopg.connect(uri, autocommit=True) as conn:
            for role in created:  # one by one: `drop owned by a, b` trips over shared default ACLs
                conn.execute(sql.SQL("drop owned by {} cascade").format(sql.Identifier(role)))
    with psycopg.connect(postgres.admin_uri, autocommit=True) as conn:
        for role in roles.all():
            conn.execute(sql.SQL("drop role if exists {}").format(sql.Identifier(role)))


# config's role of each part of the pipeline (session_roles.py), also PACBOOK_<name> in the environment
# -> the Roles field naming it
ROLE_SETTINGS = {
    "SOURCE_READ_ROLE": "extractor",
    "WAREHOUSE_LOAD_ROLE": "loader",
    "WAREHOUSE_TRANSFORM_ROLE": "transformer",
    "MARTS_READ_ROLE": "bi_reader",
    "PII_READ_ROLE": "pii_reader",
}
