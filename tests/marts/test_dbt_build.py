"""`dbt build` of the whole project, run by the dbt CLI against a warehouse filled by the Luigi extraction:
every model builds and every dbt test (data tests, unit tests, reconciliation tests) passes."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from include.luigi_tasks.extract_source import extract_source
from include.pacbook.dbt_cli import dbt_command, dbt_env
from tests.conftest import query_one


def run_dbt_cli(warehouse_uri: str, target_dir: Path, *args: str) -> subprocess.CompletedProcess:
    """The dbt CLI on the project with its env-var profile, writing into a private target folder."""
    env = dbt_env(warehouse_uri)  # with the PII key in its sessions, as the nightly run's dbt
    command = dbt_command(*args, target=target_dir, log_path=target_dir / "logs")
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)


def dbt_build(warehouse_uri: str, target_dir: Path, *extra: str) -> dict:
    result = run_dbt_cli(warehouse_uri, target_dir, "build", *extra)
    results = json.loads((target_dir / "run_results.json").read_text())
    failures = [
        r["unique_id"] + ": " + str(r.get("message"))
        for r in results["results"]
        if r["status"] not in ("success", "pass", "warn")
    ]
    assert result.returncode == 0 and not failures, result.stdout[-5000:] + "\n".join(failures)
    return results


@pytest.mark.parametrize("source_name", ["generated_source", "real_source"])
def test_dbt_build_passes_all_its_tests(request, postgres, monkeypatch, tmp_path, source_name):
    source = request.getfixturevalue(source_name)
    warehouse = postgres.fresh_database("warehouse_dbt")
    monkeypatch.setenv("AIRFLOW_CONN_PACBOOK_SOURCE", source)
    monkeypatch.setenv("AIRFLOW_CONN_PACBOOK_WAREHOUSE", warehouse)
    extract_source("dbt_build_test")

    results = dbt_build(warehouse, tmp_path / "target")
    kinds = {r["unique_id"].split(".")[0] for r in results["results"]}
    assert {"model", "test", "snapshot"} <= kinds
    assert query_one(warehouse, "select count(*), sum(sales_amount) from dwh.fct_sales") == query_one(
        source, "select count(*), sum(price) from public.order_line"
    )
    # A second build on unchanged data passes again and the snapshot takes no new version.
    dbt_build(warehouse, tmp_path / "target")
    assert query_one(warehouse, "select count(*) from dwh.dim_customer where not is_current")[0] == 0
    if source_name == "real_source":
        assert_docs_generate(warehouse, tmp_path / "docs")
    else:
        # dbt's sessions carry the project's session settings (config.DBT_SESSION_SETTINGS): no JIT.
        shown = run_dbt_cli(
            warehouse,
            tmp_path / "target",
            "show",
            "--inline",
            "select current_setting('jit') as jit",
            "--output",
            "json",
        )
        assert shown.returncode == 0 and '"jit": "off"' in shown.stdout, shown.stdout[-2000:]


def assert_docs_generate(warehouse_uri: str, target_dir: Path) -> None:
    """`dbt docs generate` writes a static site with the catalog of every warehouse table."""
    result = run_dbt_cli(warehouse_uri, target_dir, "docs", "generate", "--static")
    assert result.returncode == 0, result.stdout[-3000:]
    catalog = json.loads((target_dir / "catalog.json").read_text())
    assert "model.pacbook.fct_sales" in catalog["nodes"]
    assert (target_dir / "static_index.html").stat().st_size > 100_000
