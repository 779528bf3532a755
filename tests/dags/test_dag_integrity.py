"""DAG integrity, in the Astro template's spirit: it imports, and the house rules hold for every task."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from datetime import timedelta

import pytest

from include.pacbook import config

DAGS_DIR = config.PROJECT_ROOT / "dags"


@pytest.fixture(scope="module")
def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(DAGS_DIR))


def test_dags_import_without_errors(dagbag):
    assert dagbag.import_errors == {}, dagbag.import_errors
    assert config.DAG_ID in dagbag.dags


def test_dag_is_nightly_tagged_documented_and_single_run(dagbag):
    dag = dagbag.dags[config.DAG_ID]
    assert dag.tags, "the DAG needs tags"
    assert dag.doc_md and "Runbook" in dag.doc_md
    assert dag.timetable.expression == config.nightly_schedule()
    assert type(dag.timetable).__name__ == "CronDataIntervalTimetable"  # runs cover their data interval
    assert dag.catchup is False
    assert dag.max_active_runs == 1


def test_every_task_has_owner_retries_backoff_and_timeout(dagbag):
    dag = dagbag.dags[config.DAG_ID]
    for task in dag.tasks:
        assert task.owner and task.owner != "airflow", f"{task.task_id} has no owner"
        assert task.retries >= 1, f"{task.task_id} has no retries"
        assert task.retry_exponential_backoff, f"{task.task_id} retries without backoff"
        assert task.execution_timeout is not None, f"{task.task_id} has no execution_timeout"
        assert task.execution_timeout <= timedelta(hours=1), f"{task.task_id} may hang for hours"


def test_every_sensor_reschedules_and_times_out(dagbag):
    from airflow.sdk.bases.sensor import BaseSensorOperator

    dag = dagbag.dags[config.DAG_ID]
    sensors = {task.task_id: task for task in dag.tasks if isinstance(task, BaseSensorOperator)}
    assert set(sensors) == {"source_ready", "warehouse_free", "landing_files"}
    for task_id, sensor in sensors.items():
        assert sensor.mode == "reschedule", task_id
        assert 0 <= sensor.timeout <= timedelta(hours=6).total_seconds(), task_id
    # no source is a failure; no publisher file tonight is a normal night: skipped, not failed
    assert not sensors["source_ready"].soft_fail and not sensors["warehouse_free"].soft_fail
    assert sensors["landing_files"].soft_fail
    assert dag.get_task("ingest_landing_files").trigger_rule == "none_failed"


def test_cosmos_renders_one_task_group_per_layer_with_model_tasks(dagbag):
    dag = dagbag.dags[config.DAG_ID]
    groups = {task.task_id.split(".")[0] for task in dag.tasks if "." in task.task_id}
    assert {"staging", "dwh", "marts"} <= groups
    task_ids = {task.task_id for task in dag.tasks}
    for expected in (
        "staging.stg_pacbook__order_line_model_build",
        "dwh.fct_sales_model_build",
        "marts.monthly_sales_model_build",
    ):
        assert expected in task_ids, sorted(task_ids)
    route = dag.get_task("whole_project_or_selection")
    assert any(t.task_id.startswith("staging.") for t in route.downstream_list)
    assert "dbt_selected" in route.downstream_task_ids


def test_dag_file_parses_without_any_database_or_network(tmp_path):
    """The scheduler parses this file every few seconds: no I/O at import. (Its parse time is a
    benchmark, `python -m bench.dag_parse`, not a timed test.)"""
    script = textwrap.dedent(
        f"""
        import time, runpy
        started = time.perf_counter()
        runpy.run_path({str(DAGS_DIR / "pacbook_warehouse.py")!r})
        print(time.perf_counter() - started)
        """
    )
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(tmp_path),
        # Any database access at import would fail loudly against this address.
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": "postgresql+psycopg2://nobody:x@127.0.0.1:9/none",
        "AIRFLOW_CONN_PACBOOK_SOURCE": "postgresql://nobody:x@127.0.0.1:9/none",
        "AIRFLOW_CONN_PACBOOK_WAREHOUSE": "postgresql://nobody:x@127.0.0.1:9/none",
        "PYTHONPATH": str(config.PROJECT_ROOT),
    }
    result = subprocess.run(
        [sys.executable, "-c", "import airflow, cosmos\n" + script], env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert float(result.stdout.strip().splitlines()[-1]) > 0


def test_trigger_params_are_typed_and_validated(dagbag):
    from airflow.sdk import ParamsDict

    dag = dagbag.dags[config.DAG_ID]
    assert set(dag.params) == {"full_refresh", "dbt_select", "dry_run"}
    defaults = ParamsDict(dag.params)
    defaults.validate()
    for bad in ({"full_refresh": "yes please"}, {"dbt_select": "x; drop table dwh.fct_sales"}, {"dry_run": 3}):
        params = ParamsDict(dag.params)
        with pytest.raises(Exception, match=r"(?i)invalid|not of type|does not match|validation"):
            for key, value in bad.items():
                params[key] = value
            params.validate()


def test_dbt_tasks_run_the_dbt_of_this_environment_whatever_the_path(dagbag):
    """The components are started by absolute path, so `dbt` need not be on their PATH: a dbt process
    per task (PACBOOK_COSMOS_EXECUTION_MODE=local-subprocess) failed with "No such file: 'dbt'"."""
    dbt_task = dagbag.dags[config.DAG_ID].get_task("dwh.fct_sales_model_build")
    executable = dbt_task.dbt_executable_path
    assert os.access(executable, os.X_OK), executable
    version = subprocess.run([executable, "--version"], env={"PATH": "/nonexistent"}, capture_output=True, text=True)
    assert version.returncode == 0 and "1.11" in version.stdout, version.stdout + version.stderr


def test_no_dbt_task_runs_the_unit_tests(dagbag):
    """Unit tests prove the models' logic once per change of code, in CI; every dbt task of the nightly
    run (node builds and layer tests) leaves them out (docs/warehouse.md §9)."""
    dbt_tasks = [t for t in dagbag.dags[config.DAG_ID].tasks if t.task_id.split(".")[0] in ("staging", "dwh", "marts")]
    assert len(dbt_tasks) > 40
    for task in dbt_tasks:
        assert task.env.get("DBT_EXCLUDE_RESOURCE_TYPES") == "unit_test", task.task_id


def test_dbt_tasks_check_their_node_first_and_record_it_after_its_tests(dagbag):
    """State-aware builds: each dbt task checks its node before dbt starts (an up-to-date node ends the
    task without dbt, successfully, so the branches' skips still travel by trigger rule) and records it
    after its tests passed."""
    from include.pacbook import build_state

    dag = dagbag.dags[config.DAG_ID]
    dbt_tasks = [
        t
        for t in dag.tasks
        if t.task_id.split(".")[0] in ("staging", "dwh", "marts") and not t.task_id.endswith(".layer_tests")
    ]
    assert len(dbt_tasks) == len(build_state.manifest_nodes())
    for task in dbt_tasks:
        assert task._pre_execute_hook is build_state.skip_cosmos_build_when_up_to_date, task.task_id
        assert task._post_execute_hook is build_state.record_cosmos_build, task.task_id
        assert task.trigger_rule == "all_success", task.task_id


def _tests_each_task_runs(dag) -> dict[str, list[str]]:
    """What each dbt task of the DAG runs, read from the manifest dbt wrote: a node task the tests
    whose every parent is its node or upstream of it (`--indirect-selection buildable`), a layer's
    `layer_tests` task the tests it selects by name."""
    manifest = json.loads(config.DBT_MANIFEST_PATH.read_text())
    nodes = manifest["nodes"]
    parent_map = manifest["parent_map"]

    def upstream(unique_id: str, seen: set[str] | None = None) -> set[str]:
        seen = set() if seen is None else seen
        for parent in parent_map.get(unique_id, []):
            if parent not in seen:
                seen.add(parent)
                upstream(parent, seen)
        return seen

    by_node_name = {n["name"]: uid for uid, n in nodes.items() if n["resource_type"] in ("model", "seed", "snapshot")}
    runs: dict[str, list[str]] = {}
    for task in dag.tasks:
        group, _, name = task.task_id.partition(".")
        if group not in ("staging", "dwh", "marts"):
            continue
        if name == "layer_tests":
            runs[task.task_id] = list(task.select)
            continue
        node = by_node_name[name.rsplit("_", 2)[0]]
        covered = {node} | upstream(node)
        runs[task.task_id] = [
            n["name"]
            for uid, n in nodes.items()
            if n["resource_type"] == "test" and node in parent_map[uid] and set(parent_map[uid]) <= covered
        ]
    return runs


def test_every_data_test_of_the_project_runs_in_exactly_one_task(dagbag):
    """A node task runs the tests of its node (buildable selection): a test on a source, or over two
    models neither upstream of the other, fell in no task (49 of them, found in review). Each layer
    ends with `layer_tests`, which runs those of its layer once everything they read is built."""
    dag = dagbag.dags[config.DAG_ID]
    runs = _tests_each_task_runs(dag)
    manifest = json.loads(config.DBT_MANIFEST_PATH.read_text())
    every_test = sorted(n["name"] for n in manifest["nodes"].values() if n["resource_type"] == "test")
    assert sorted(name for names in runs.values() for name in names) == every_test
    staging = set(runs["staging.layer_tests"])
    assert {"assert_every_order_has_a_line", "source_unique_pacbook_customer_customer_id"} <= staging
    assert "relationships_stg_pacbook__order_line_order_id__order_id__ref_stg_pacbook__cust_order_" in staging
    assert runs["dwh.layer_tests"] == [
        "relationships_publisher_cost_rates_publisher_id__publisher_id__ref_stg_pacbook__publisher_"
    ]
    assert "marts.layer_tests" not in runs  # every marts test reads one mart and what is upstream of it
    # The layer's tests wait for every node of the layer, and the next layer waits for them.
    for layer, next_layer in (("staging", "dwh"), ("dwh", "marts")):
        layer_tests = dag.get_task(f"{layer}.layer_tests")
        others = {t.task_id for t in dag.tasks if t.task_id.startswith(f"{layer}.")} - {layer_tests.task_id}
        assert layer_tests.get_flat_relative_ids(upstream=True) >= others
        assert all(t.startswith(f"{next_layer}.") for t in layer_tests.downstream_task_ids)
        assert layer_tests.downstream_task_ids


def test_layer_tests_select_real_dbt_tests(dagbag, tmp_path):
    """dbt itself resolves each selected name to one test: a name that matched nothing would make the
    task pass without testing anything."""
    from include.pacbook.dbt_cli import dbt_command

    dag = dagbag.dags[config.DAG_ID]
    for layer in ("staging", "dwh"):
        names = sorted(dag.get_task(f"{layer}.layer_tests").select)
        listed = subprocess.run(
            dbt_command(
                "ls",
                "--resource-type",
                "test",
                "--output",
                "name",
                "--quiet",
                "--select",
                *names,
                target=tmp_path / layer,
            ),
            env={**os.environ, **config.dbt_cli_env("postgresql://nobody:x@127.0.0.1:9/none")},
            capture_output=True,
            text=True,
        )
        assert listed.returncode == 0, listed.stdout[-3000:] + listed.stderr[-2000:]
        assert sorted(listed.stdout.split()) == names
