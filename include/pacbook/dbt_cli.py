"""The dbt CLI on the warehouse, for the runs Cosmos does not render: a user's own selection."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

from include.pacbook import build_state, config, warehouse
from include.pacbook.privileges import dbt_session_env

log = logging.getLogger("pacbook.dbt")


class DbtCommandError(RuntimeError):
    pass


def dbt_env(warehouse_uri: str, *, unit_tests: bool = False) -> dict[str, str]:
    """The environment of a dbt CLI process: the profile's connection variables and the PII key's
    session option (the customer snapshot encrypts with it; docs/security.md#the-key). A production run
    leaves the unit tests out (config.DBT_PRODUCTION_ENV); the test suite asks for them."""
    env = {
        **os.environ,
        **config.dbt_cli_env(warehouse_uri),
        **dbt_session_env(config.pii_encryption_key(), config.connection_options(warehouse_uri)),
        "DBT_SEND_ANONYMOUS_USAGE_STATS": "False",
        **config.DBT_PRODUCTION_ENV,
    }
    if unit_tests:  # whatever the caller's environment says (dbt also reads the DBT_ENGINE_ spelling)
        for name in config.DBT_PRODUCTION_ENV:
            env.pop(name, None)
            env.pop(name.replace("DBT_", "DBT_ENGINE_", 1), None)
    return env


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


@contextlib.contextmanager
def dbt_target(warehouse_uri: str) -> Iterator[Path]:
    """The target folder of this warehouse's CLI runs, kept between them so that dbt parses only the
    files that changed (a fresh folder costs a full parse, ~3 s of every call); one dbt at a time uses
    it. The previous run's results are gone before a run starts: they must never pass for its own."""
    key = hashlib.sha256(config.redact(warehouse_uri).encode()).hexdigest()[:16]
    folder = config.state_dir() / "dbt-cli" / key
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        (folder / "run_results.json").unlink(missing_ok=True)
        yield folder


def run_dbt(*args: str, snapshot_at: str | None = None, warehouse_uri: str, record_as_run: str | None = None) -> None:
    """Runs `dbt <args>` with the project's CLI profile; dbt's own output goes to this task's log.
    ``snapshot_at`` stamps the snapshots' new versions; it travels in the environment, since a var
    that changes every night would make dbt parse the whole project again (macros/snapshot_get_time.sql).
    With ``record_as_run``, the nodes it built whose tests passed are recorded as built by that run
    (``audit.dbt_node_build``), failed or not, so the nightly build knows them up to date."""
    env = dbt_env(warehouse_uri) | ({config.SNAPSHOT_AT_VARIABLE: snapshot_at} if snapshot_at else {})
    started_at = warehouse_clock(warehouse_uri) if record_as_run else None
    with dbt_target(warehouse_uri) as target:
        command = dbt_command(*args, target=target)
        process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert process.stdout is not None
        for line in process.stdout:
            log.info("dbt: %s", line.rstrip())
        returncode = process.wait()
        if record_as_run and started_at is not None:
            record_builds(warehouse_uri, target, record_as_run, started_at)
        if returncode != 0:
            failures = _failures(target / "run_results.json")
            raise DbtCommandError(
                f"dbt {' '.join(args)} failed: {failures or 'see dbt output above'} — see RUNBOOK.md#dbt-model-failed"
            )


def build_changed(warehouse_uri: str, run_id: str, snapshot_at: str, full_refresh: bool = False) -> dict[str, int]:
    """`dbt build` of what changed (``changed_selection``); returns how many nodes were rebuilt and how
    many were up to date."""
    selection, counts = changed_selection(warehouse_uri, full_refresh)
    if selection is not None:
        run_dbt(
            "build",
            *selection,
            snapshot_at=snapshot_at,
            warehouse_uri=warehouse_uri,
            record_as_run=run_id,
        )
    return counts


def changed_selection(warehouse_uri: str, full_refresh: bool = False) -> tuple[list[str] | None, dict[str, int]]:
    """The `dbt build` arguments that rebuild the nodes whose inputs or code changed since their last
    build, with their tests and the tests of the staging tables that changed (build_state.py), with
    ``--full-refresh`` when an incremental model's code changed: none (the whole project) on a full
    refresh, None when everything is up to date."""
    nodes, decisions = _plan(warehouse_uri, full_refresh)
    stale = [uid for uid, decision in decisions.items() if decision.rebuild]
    for uid, decision in decisions.items():
        log.info("%s %s: %s", "rebuild" if decision.rebuild else "skip", nodes[uid].name, decision.reason)
    counts = {"rebuilt": len(stale), "up_to_date": len(decisions) - len(stale)}
    if full_refresh:
        return ["--full-refresh"], counts
    if not stale:
        return None, counts
    # An incremental model whose code changed is rebuilt from scratch; the flag reaches every
    # incremental model of the selection (one dbt run keeps the build order).
    refresh = ["--full-refresh"] if any(decisions[uid].full_refresh for uid in stale) else []
    sources = {
        selector
        for uid in stale
        for table, selector in zip(nodes[uid].staging_tables, nodes[uid].source_selectors, strict=True)
        if table in decisions[uid].changed_tables
    }
    return [*refresh, "--select", *(nodes[uid].name for uid in stale), *sorted(sources)], counts


def nodes_behind_staging(warehouse_uri: str) -> dict[str, str]:
    """The models and snapshots a build of the whole project would rebuild now, with the reason: none
    once every one of them reflects what staging holds."""
    nodes, decisions = _plan(warehouse_uri)
    return {nodes[uid].name: decision.reason for uid, decision in decisions.items() if decision.rebuild}


def _plan(warehouse_uri: str, full_refresh: bool = False) -> tuple[dict, dict[str, build_state.Decision]]:
    nodes = build_state.manifest_nodes()
    with warehouse.connect(warehouse_uri) as conn:
        state = build_state.read_state(conn, nodes.values())
    return nodes, build_state.plan(nodes, state, full_refresh)


def warehouse_clock(warehouse_uri: str):
    with warehouse.connect(warehouse_uri) as conn:
        return conn.execute("select clock_timestamp()").fetchone()[0]


def record_builds(warehouse_uri: str, target: Path, run_id: str, started_at) -> None:
    """Records what the dbt run that wrote ``target`` built (build_state.record_builds)."""
    run_results, manifest = target / "run_results.json", target / "manifest.json"
    if not run_results.exists() or not manifest.exists():
        return
    with warehouse.connect(warehouse_uri) as conn:
        built = build_state.record_builds(
            conn,
            build_state.manifest_nodes(),
            json.loads(run_results.read_text()),
            json.loads(manifest.read_text()),
            run_id,
            started_at,
        )
    log.info("recorded %d dbt nodes as built by run %s", len(built), run_id)


def _failures(run_results: Path) -> str:
    if not run_results.exists():
        return ""
    results = json.loads(run_results.read_text())["results"]
    bad = [f"{r['unique_id']} ({r['status']})" for r in results if r["status"] in ("error", "fail")]
    return ", ".join(bad[:10]) + (f" and {len(bad) - 10} more" if len(bad) > 10 else "")
