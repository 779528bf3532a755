"""A source and a warehouse secured by apply_privileges, filled by the real extraction and dbt build.

The extraction reads the source as the extractor role; dbt builds every model as the transformer role
with the PII key in its session. The key and the passwords are generated for this test session and
exist nowhere else. Role names carry a random suffix so that tests never touch the real roles.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import psycopg
import pytest

from include.luigi_tasks.extract_source import extract_source
from include.pacbook import config
from include.pacbook.privileges import Roles, apply_privileges, pii_key_options
from include.pacbook.source_generator import generate_source
from tests.conftest import ROLE_SETTINGS, PostgresForTests, drop_roles, new_roles

FIRST_NIGHT = "2024-03-27 00:00:00"
SECOND_NIGHT = "2024-03-28 00:00:00"


def role_uri(admin_uri: str, role: str, password: str) -> str:
    """The URI of the same database, logged in as `role`."""
    parts = config.connection_parts(admin_uri)
    return f"postgresql://{quote(role)}:{quote(password, safe='')}@{parts.host}:{parts.port}/{parts.dbname}"


@dataclass
class SecuredWarehouse:
    admin_source: str
    admin_warehouse: str
    roles: Roles
    passwords: dict[str, str]
    pii_key: str
    changed_customer_id: int
    old_email: str
    new_email: str
    databases: list[str]
    dbt_target: Path  # one target folder for every dbt call: dbt parses the project once, then partially
    retired_keys: list[str] = field(default_factory=list)  # keys rotated away, still never to be found anywhere

    def source_as(self, role: str) -> str:
        return role_uri(self.admin_source, role, self.passwords[role])

    def warehouse_as(self, role: str) -> str:
        return role_uri(self.admin_warehouse, role, self.passwords[role])


@contextlib.contextmanager
def pipeline_connections(source_uri: str, warehouse_uri: str) -> Iterator[None]:
    """Points the pipeline's two Airflow connections at the given URIs for a block."""
    saved = {name: os.environ.get(name) for name in ("AIRFLOW_CONN_PACBOOK_SOURCE", "AIRFLOW_CONN_PACBOOK_WAREHOUSE")}
    os.environ["AIRFLOW_CONN_PACBOOK_SOURCE"] = source_uri
    os.environ["AIRFLOW_CONN_PACBOOK_WAREHOUSE"] = warehouse_uri
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def run_dbt(
    uri: str, target: Path, *args: str, pii_key: str | None = None, previous_key: str | None = None
) -> subprocess.CompletedProcess:
    """The dbt CLI as the given login; the PII key reaches its sessions the way the DAG passes it
    (libpq's PGOPTIONS) - and only the key given here, whatever the environment holds."""
    env = {**os.environ, **config.dbt_cli_env(uri), "DBT_SEND_ANONYMOUS_USAGE_STATS": "False"}
    env.pop("PGOPTIONS", None)
    if pii_key is not None:
        env["PGOPTIONS"] = pii_key_options(pii_key, previous_key)
    dbt = config.dbt_executable()
    project = ["--project-dir", str(config.DBT_PROJECT_DIR), "--profiles-dir", str(config.DBT_PROJECT_DIR)]
    paths = ["--target-path", str(target), "--log-path", str(target / "logs")]
    return subprocess.run([dbt, *args, *project, *paths], env=env, capture_output=True, text=True, timeout=900)


def build_as_transformer(secured: SecuredWarehouse, snapshot_at: str, *select: str) -> None:
    """`dbt build` (models, snapshots, every test) as the transformer with the PII key."""
    selection = ["--select", *select] if select else []
    vars_ = f'{{snapshot_at: "{snapshot_at}"}}'
    uri = secured.warehouse_as(secured.roles.transformer)
    result = run_dbt(uri, secured.dbt_target, "build", "--vars", vars_, *selection, pii_key=secured.pii_key)
    results = json.loads((secured.dbt_target / "run_results.json").read_text())["results"]
    failures = [r["unique_id"] for r in results if r["status"] not in ("success", "pass", "warn")]
    assert result.returncode == 0 and not failures, result.stdout[-5000:] + "\n".join(failures)


def rotate_key_as_transformer(secured: SecuredWarehouse, new_key: str) -> str:
    """`dbt run-operation rotate_pii_key` with both keys in the session; returns dbt's output."""
    uri = secured.warehouse_as(secured.roles.transformer)
    result = run_dbt(
        uri, secured.dbt_target, "run-operation", "rotate_pii_key", pii_key=new_key, previous_key=secured.pii_key
    )
    assert result.returncode == 0, result.stdout[-3000:]
    secured.retired_keys.append(secured.pii_key)
    secured.pii_key = new_key
    return result.stdout


@pytest.fixture(scope="package")
def secured(postgres: PostgresForTests, tmp_path_factory) -> Iterator[SecuredWarehouse]:
    with pytest.MonkeyPatch.context() as monkeypatch:
        yield from _secured(postgres, tmp_path_factory, monkeypatch)


def _secured(postgres: PostgresForTests, tmp_path_factory, monkeypatch) -> Iterator[SecuredWarehouse]:
    roles = new_roles()
    source = postgres.fresh_database("source_security")
    warehouse = postgres.fresh_database("warehouse_security")
    generate_source(source, scale=0.05, seed=11)
    passwords = {role: secrets.token_urlsafe(18) for role in roles.all()}
    secured = SecuredWarehouse(
        admin_source=source,
        admin_warehouse=warehouse,
        roles=roles,
        passwords=passwords,
        pii_key=secrets.token_urlsafe(32),
        changed_customer_id=0,
        old_email="",
        new_email="",
        databases=[source, warehouse],
        dbt_target=tmp_path_factory.mktemp("security_dbt"),
    )
    try:
        apply_privileges(source, warehouse, passwords, roles)
        # The pipeline takes this package's roles wherever it takes the project's: the extraction then
        # writes the warehouse as the loader although its connection gives the administrator's login.
        for setting, role in ROLE_SETTINGS.items():
            monkeypatch.setattr(config, setting, getattr(roles, role))
        # Night 1: extraction reads the source as the extractor; dbt builds everything as the transformer.
        with pipeline_connections(secured.source_as(roles.extractor), warehouse):
            extract_source("security_night_1")
        build_as_transformer(secured, FIRST_NIGHT)
        # Night 2: one customer changed their email; the snapshot must see it although it only
        # stores ciphertexts.
        with psycopg.connect(source, autocommit=True) as conn:
            customer_id, old_email = conn.execute(
                "select customer_id, email from customer where email is not null order by customer_id limit 1"
            ).fetchone()
            new_email = f"moved.{customer_id}@example.org"
            conn.execute("update customer set email = %s where customer_id = %s", (new_email, customer_id))
        secured.changed_customer_id, secured.old_email, secured.new_email = customer_id, old_email, new_email
        with pipeline_connections(secured.source_as(roles.extractor), warehouse):
            extract_source("security_night_2")
        build_as_transformer(secured, SECOND_NIGHT, "snap_pacbook__customers", "dim_customer")
        yield secured
    finally:
        drop_roles(postgres, roles, secured.databases)
