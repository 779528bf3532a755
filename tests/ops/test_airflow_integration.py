"""The pieces inside real Airflow: a tiny DAG run by `airflow dags test` (the Task SDK's task runner)
with the audit listener plugin loaded and PacbookFailureNotifier as its failure callback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from include.pacbook import config
from include.pacbook.smtp_sink import read_messages
from tests.conftest import query_all

PROBE_DAG = """
import pendulum
from airflow.sdk import dag, task

from include.pacbook.notifications import PacbookFailureNotifier


@dag(
    dag_id="ops_probe",
    schedule=None,
    start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
    catchup=False,
    default_args={"retries": 0, "on_failure_callback": PacbookFailureNotifier()},
)
def ops_probe():
    @task
    def extract() -> dict[str, int]:
        return {"book": 7, "author": 5}

    @task
    def forecast(counts: dict) -> None:
        raise ValueError("probe failure: not enough history\\nsecond line")

    forecast(extract())


ops_probe()
"""


def test_listener_and_notifier_in_a_real_task_run(postgres, smtp_sink, tmp_path: Path):
    warehouse = postgres.fresh_database("warehouse_ops_probe")
    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / "ops_probe.py").write_text(PROBE_DAG)
    airflow = str(Path(sys.executable).with_name("airflow"))
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(tmp_path / "airflow"),
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(config.PROJECT_ROOT / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__API__BASE_URL": "http://airflow.test:8080",
        "AIRFLOW_CONN_PACBOOK_WAREHOUSE": warehouse,
        "PACBOOK_SMTP_HOST": smtp_sink.host,
        "PACBOOK_SMTP_PORT": str(smtp_sink.port),
        "PYTHONPATH": str(config.PROJECT_ROOT),
    }
    env.pop("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", None)  # its own SQLite metadata database
    migrate = subprocess.run([airflow, "db", "migrate"], env=env, capture_output=True, text=True, timeout=300)
    assert migrate.returncode == 0, migrate.stderr[-3000:]
    run = subprocess.run(
        [airflow, "dags", "test", "ops_probe", "2025-03-10"], env=env, capture_output=True, text=True, timeout=300
    )
    output = run.stdout + run.stderr
    assert "probe failure" in output, output[-5000:]

    rows = query_all(warehouse, "select task_id, try_number, state, rows, error, duration_seconds from audit.task_run")
    by_task = {row[0]: row for row in rows}
    assert set(by_task) == {"extract", "forecast"}, output[-5000:]
    assert by_task["extract"][1:4] == (1, "success", 12)  # the XCom return value, summed
    assert by_task["forecast"][1:5] == (1, "failed", None, "ValueError: probe failure: not enough history")
    assert all(row[5] is not None and row[5] >= 0 for row in rows)

    [message] = read_messages(smtp_sink.directory)
    assert message["Subject"] == (
        "[PacBook] forecast failed, retries exhausted: ValueError: probe failure: not enough history"
    )
    body = message.get_content().splitlines()
    assert "DAG: ops_probe" in body and "Task: forecast" in body and "Try: 1 of 1" in body
    assert "Runbook: RUNBOOK.md#forecast-failed" in body
    [log_line] = [line for line in body if line.startswith("Log: ")]
    assert log_line.startswith("Log: http://airflow.test:8080/dags/ops_probe/runs/") and "/tasks/forecast" in log_line


def test_every_module_the_task_workers_preload_imports(tmp_path: Path):
    """The forkserver ignores a preload module it cannot import: a misspelt one would only make every
    task slower, silently. Each must import on its own, in a fresh interpreter."""
    from include.pacbook.airflow_stack import TASK_PRELOAD_MODULES

    env = {**os.environ, "AIRFLOW_HOME": str(tmp_path / "airflow"), "PYTHONPATH": str(config.PROJECT_ROOT)}
    for module in TASK_PRELOAD_MODULES:
        result = subprocess.run([sys.executable, "-c", f"import {module}"], env=env, capture_output=True, text=True)
        assert result.returncode == 0, f"{module}: {result.stderr[-2000:]}"
