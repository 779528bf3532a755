"""The real Airflow stack the end-to-end tests share: one per test package run, stopped at the end."""

from __future__ import annotations

import os

import psutil
import pytest

from include.pacbook import config
from include.pacbook.airflow_stack import AirflowStack, airflow_env, migrate_metadata
from include.pacbook.privileges import apply_source_privileges, apply_warehouse_privileges
from include.pacbook.smtp_sink import running_smtp_sink
from tests.conftest import ROLE_SETTINGS, TEST_STATE, drop_roles, new_roles

MAILBOX = TEST_STATE / "mail"


@pytest.fixture(scope="package")
def mail_sink():
    for old in MAILBOX.glob("*.eml"):
        old.unlink()
    with running_smtp_sink(0, MAILBOX) as sink:
        yield sink


# The project's roles under this run's own names (roles are server-wide): the stack's tasks take them
# (PACBOOK_<setting> in their environment) on the warehouses and sources warehouse_with_roles secured.
E2E_ROLES = new_roles()
_SECURED_DATABASES: list[str] = []


@pytest.fixture(scope="package")
def airflow(postgres, mail_sink):
    metadata = postgres.fresh_database("airflow_metadata").replace("postgresql://", "postgresql+psycopg2://", 1)
    env = airflow_env(metadata, {}, home=TEST_STATE / "airflow", port=config.test_airflow_port())
    for name in ("AIRFLOW_CONN_PACBOOK_SOURCE", "AIRFLOW_CONN_PACBOOK_WAREHOUSE"):
        env.pop(name, None)  # connections come from Airflow's store, switched per scenario
    env["PACBOOK_RETRY_DELAY_SECONDS"] = "1"  # failures should fail fast here, with the same retry logic
    env["PACBOOK_SMTP_PORT"] = str(mail_sink.port)
    # No publisher files unless a test drops some; a quiet night then skips the landing sensor at once.
    env["PACBOOK_LANDING_DIR"] = str(TEST_STATE / "landing")
    env["PACBOOK_LANDING_WAIT_SECONDS"] = "0"
    env["PACBOOK_EXPORTS_DIR"] = str(TEST_STATE / "exports")
    env["PACBOOK_REPORTS_DIR"] = str(TEST_STATE / "reports")
    # An unreachable source gives up after two pokes here instead of two hours.
    env["PACBOOK_SOURCE_WAIT_SECONDS"] = "45"
    # Every run here takes longer than 20 s, so every run misses this deadline and must alert.
    env["PACBOOK_RUN_DEADLINE_MINUTES"] = "0.33"
    env.update({f"PACBOOK_{setting}": getattr(E2E_ROLES, field) for setting, field in ROLE_SETTINGS.items()})
    migrate_metadata(env)
    with AirflowStack(env, TEST_STATE / "airflow-components") as stack:
        stack.wait_for_dag(config.DAG_ID)
        groups = {proc.pid for proc in stack.processes.values()}
        yield stack
    # Stopping the stack stops every process it started, the executor's workers included.
    left = [
        f"{p.info['pid']} {p.info['name']}"
        for p in psutil.process_iter(["pid", "name", "status"])
        if p.info["status"] != psutil.STATUS_ZOMBIE and _process_group(p.info["pid"]) in groups
    ]
    assert not left, f"still running after the Airflow stack stopped: {left}"
    drop_roles(postgres, E2E_ROLES, _SECURED_DATABASES)


def _process_group(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except ProcessLookupError:
        return None


def warehouse_with_roles(postgres, name: str, source: str | None = None) -> str:
    """A fresh warehouse, and the test's own source when given, with the project's roles granted as
    `make run` grants them: each part of the pipeline then works as its role (session_roles.py)."""
    if source is not None:
        apply_source_privileges(source, E2E_ROLES)
        _SECURED_DATABASES.append(source)
    warehouse = postgres.fresh_database(name)
    apply_warehouse_privileges(warehouse, E2E_ROLES)
    _SECURED_DATABASES.append(warehouse)
    return warehouse


# The trigger form's parameters as a plain nightly run has them.
NIGHTLY_PARAMS = {"full_refresh": False, "dbt_select": "", "dry_run": False}


@pytest.fixture(scope="package")
def nightly_run(airflow, postgres, generated_source) -> tuple[dict, str]:
    """One green nightly run of the whole DAG on the generated source, triggered through the REST API
    with its parameters; shared by the tests that look at it (its data, its grid in the UI), because a
    run of the whole model costs minutes. Returns the run and its warehouse."""
    warehouse = warehouse_with_roles(postgres, "warehouse_generated")
    airflow.set_connection(config.SOURCE_CONN_ID, generated_source)
    airflow.set_connection(config.WAREHOUSE_CONN_ID, warehouse)
    return airflow.run_latest_interval(config.DAG_ID, NIGHTLY_PARAMS, timeout=config.run_timeout_seconds()), warehouse
