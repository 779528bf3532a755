"""The dbt CLI on the warehouse, for the runs Cosmos does not render: a user's own selection."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import tempfile
from pathlib import Path

from include.pacbook import config
from include.pacbook.privileges import pii_session_env

log = logging.getLogger("pacbook.dbt")


class DbtCommandError(RuntimeError):
    pass


def dbt_env(warehouse_uri: str) -> dict[str, str]:
    """The environment of a dbt CLI process: the profile's connection variables and the PII key's
    session option (the customer snapshot encrypts with it; docs/security.md#the-key)."""
    return {
        **os.environ,
        **config.dbt_cli_env(warehouse_uri),
        **pii_session_env(config.pii_encryption_key()),
        "DBT_SEND_ANONYMOUS_USAGE_STATS": "False",
    }


def dbt_command(*args: str, target: Path | str, log_path: Path | str | None = None) -> list[str]:
    """`dbt <args>` on the project with its CLI profile, writing into a private target folder: the
    shared manifest that Cosmos renders from stays untouched."""
    project = str(config.DBT_PROJECT_DIR)
    return [
        config.dbt_executable(),
        *args,
        *("--project-dir", project, "--profiles-dir", project),
        *("--target-path", str(target), "--log-path", str(log_path or target)),
    ]


def run_dbt(*args: str, dbt_vars: dict[str, str] | None = None, warehouse_uri: str) -> None:
    """Runs `dbt <args>` with the project's CLI profile; dbt's own output goes to this task's log."""
    env = dbt_env(warehouse_uri)
    with tempfile.TemporaryDirectory(prefix="pacbook-dbt-") as target:
        command = dbt_command(*args, *(["--vars", json.dumps(dbt_vars)] if dbt_vars else []), target=target)
        process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert process.stdout is not None
        for line in process.stdout:
            log.info("dbt: %s", line.rstrip())
        if process.wait() != 0:
            failures = _failures(Path(target) / "run_results.json")
            raise DbtCommandError(
                f"dbt {' '.join(args)} failed: {failures or 'see dbt output above'} — see RUNBOOK.md#dbt-model-failed"
            )


def _failures(run_results: Path) -> str:
    if not run_results.exists():
        return ""
    results = json.loads(run_results.read_text())["results"]
    bad = [f"{r['unique_id']} ({r['status']})" for r in results if r["status"] in ("error", "fail")]
    return ", ".join(bad[:10]) + (f" and {len(bad) - 10} more" if len(bad) > 10 else "")
