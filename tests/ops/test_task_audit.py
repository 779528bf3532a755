"""The audit listener's recording into audit.task_run, against a real PostgreSQL."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest

from include.pacbook import config
from include.pacbook.task_audit import (
    TaskOutcome,
    outcome_from_task_instance,
    record_from_task_instance,
    record_task_outcome,
    rows_from_result,
)
from tests.conftest import query_all, query_one

RUN_ID = "scheduled__2025-03-10T00:00:00+00:00"
STARTED = datetime(2025, 3, 11, 0, 0, 5, tzinfo=UTC)


@pytest.fixture
def warehouse(postgres, monkeypatch) -> str:
    uri = postgres.fresh_database("warehouse_audit")
    monkeypatch.setenv("AIRFLOW_CONN_PACBOOK_WAREHOUSE", uri)
    monkeypatch.delenv("PACBOOK_TASK_AUDIT", raising=False)
    return uri


class FakeRuntimeTaskInstance(SimpleNamespace):
    """The attributes of Airflow's RuntimeTaskInstance the listener reads, and an XCom to pull."""

    def xcom_pull(self, task_ids=None, key="return_value", **kwargs):
        assert (task_ids, key) == (self.task_id, "return_value")
        return self.returned


def _ti(task_id="extract", state="success", try_number=1, returned=None, seconds=42.5):
    return FakeRuntimeTaskInstance(
        dag_id=config.DAG_ID,
        run_id=RUN_ID,
        task_id=task_id,
        try_number=try_number,
        max_tries=2,
        state=state,
        start_date=STARTED,
        end_date=STARTED + timedelta(seconds=seconds),
        returned=returned,
    )


def test_rows_from_result():
    assert rows_from_result({"book": 10, "author": 5}) == 15
    assert rows_from_result({"mape": 0.1, "rows": 3}) is None
    assert rows_from_result({"ok": True}) is None
    assert rows_from_result({}) is None
    assert rows_from_result(None) is None
    assert rows_from_result([1, 2]) is None


def test_records_success_with_rows_and_creates_the_table(warehouse):
    record_from_task_instance(_ti(returned={"book": 11000, "author": 9000}), "success")
    row = query_one(
        warehouse,
        "select run_id, dag_id, task_id, try_number, state, started_at, finished_at, duration_seconds, rows, error,"
        " recorded_at is not null from audit.task_run",
    )
    assert row == (RUN_ID, "pacbook_warehouse", "extract", 1, "success", STARTED, STARTED + timedelta(seconds=42.5),
                   42.5, 20000, None, True)  # fmt: skip
    # the warehouse's schemas came along (ensure_schemas)
    schemas = {r[0] for r in query_all(warehouse, "select schema_name from information_schema.schemata")}
    assert {"staging", "dwh", "marts", "audit", "quarantine"} <= schemas
    key = query_all(
        warehouse,
        """select a.attname from pg_index i join pg_attribute a on a.attrelid = i.indrelid and a.attnum = any(i.indkey)
           where i.indrelid = 'audit.task_run'::regclass and i.indisprimary order by a.attname""",
    )
    assert [k[0] for k in key] == ["dag_id", "run_id", "task_id", "try_number"]


def test_records_a_retry_then_the_final_failure_then_a_success(warehouse):
    error = RuntimeError("extraction failed for 1 table(s) [book]\nbook: relation does not exist")
    record_from_task_instance(_ti(state="up_for_retry", try_number=1), "failed", error)
    record_from_task_instance(_ti(state="failed", try_number=2), "failed", error)
    record_from_task_instance(_ti(task_id="forecast", returned={"mape": 0.12}), "success")
    record_from_task_instance(_ti(task_id="dwh.dim_book_model_build", state="skipped", returned=None), "skipped")
    rows = query_all(warehouse, "select task_id, try_number, state, rows, error from audit.task_run order by 1, 2")
    assert rows == [
        ("dwh.dim_book_model_build", 1, "skipped", None, None),
        ("extract", 1, "up_for_retry", None, "RuntimeError: extraction failed for 1 table(s) [book]"),
        ("extract", 2, "failed", None, "RuntimeError: extraction failed for 1 table(s) [book]"),
        ("forecast", 1, "success", None, None),
    ]
    # the same try reported again (e.g. marked success in the UI) replaces its row
    record_from_task_instance(_ti(state="success", try_number=2, returned=None), "success")
    replaced = query_one(
        warehouse, "select state, error from audit.task_run where task_id = 'extract' and try_number = %s", (2,)
    )
    assert replaced == ("success", None)
    assert query_one(warehouse, "select count(*) from audit.task_run")[0] == 4


def test_failed_hook_with_a_running_state_still_records_failed(warehouse):
    outcome = outcome_from_task_instance(_ti(state="running"), "failed", "scheduler: heartbeat timeout")
    assert (outcome.state, outcome.error) == ("failed", "scheduler: heartbeat timeout")
    assert record_task_outcome(outcome) is True
    assert query_one(warehouse, "select state from audit.task_run")[0] == "failed"


def test_record_never_raises(postgres, monkeypatch, caplog):
    outcome = TaskOutcome(config.DAG_ID, RUN_ID, "extract", 1, "success")
    # a server nobody listens on
    monkeypatch.setenv("AIRFLOW_CONN_PACBOOK_WAREHOUSE", "postgresql://nobody@127.0.0.1:1/nowhere")
    assert record_task_outcome(outcome) is False
    assert "could not record" in caplog.text
    # no connection at all
    monkeypatch.delenv("AIRFLOW_CONN_PACBOOK_WAREHOUSE")
    assert record_task_outcome(outcome) is False
    # an instance missing every attribute
    record_from_task_instance(object(), "success")
    # switched off
    monkeypatch.setenv("PACBOOK_TASK_AUDIT", "off")
    record_from_task_instance(_ti(), "success")


def _plugin_module():
    path = config.PROJECT_ROOT / "plugins" / "pacbook_audit_listener.py"
    spec = importlib.util.spec_from_file_location("pacbook_audit_listener_under_test", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_listener_hooks_record_and_never_raise(warehouse, monkeypatch):
    plugin = _plugin_module()
    assert plugin.PacbookAuditListenerPlugin.listeners == [plugin]
    plugin.on_task_instance_success(previous_state="running", task_instance=_ti(returned={"a": 1, "b": 2}))
    plugin.on_task_instance_failed(
        previous_state="running", task_instance=_ti("forecast", state="failed"), error=ValueError("no history")
    )
    plugin.on_task_instance_skipped(previous_state="running", task_instance=_ti("dwh.x", state="skipped"))
    assert query_all(warehouse, "select task_id, state, rows, error from audit.task_run order by 1") == [
        ("dwh.x", "skipped", None, None),
        ("extract", "success", 3, None),
        ("forecast", "failed", None, "ValueError: no history"),
    ]
    monkeypatch.setenv("AIRFLOW_CONN_PACBOOK_WAREHOUSE", "postgresql://nobody@127.0.0.1:1/nowhere")
    plugin.on_task_instance_failed(previous_state=None, task_instance=None, error=None)  # logged, not raised


def test_airflow_loads_the_listener_in_workers_and_components(tmp_path):
    """Airflow's own plugin managers (Task SDK = worker, core = scheduler/API server) register the module."""
    code = (
        "import airflow\n"
        "from airflow.sdk.listener import get_listener_manager as worker\n"
        "from airflow.listeners.listener import get_listener_manager as core\n"
        "for manager in (worker(), core()):\n"
        "    names = [getattr(p, '__name__', '') for p in manager.pm.get_plugins()]\n"
        "    assert 'pacbook_audit_listener' in names, names\n"
        "    assert manager.pm.hook.on_task_instance_failed.get_hookimpls()\n"
        "print('ok')\n"
    )
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(tmp_path),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(config.PROJECT_ROOT / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "PYTHONPATH": str(config.PROJECT_ROOT),
    }
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip().endswith("ok"), result.stderr[-3000:]
