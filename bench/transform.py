"""The dbt run as the DAG renders it with Cosmos, against one bare ``dbt build`` of the same project on the same data.

On its own embedded PostgreSQL (``<state_dir>/bench/postgres-transform``, port ``--port``) with the generated
source of ``bench.extraction`` (database ``bench_source_s<scale>``, generated once), it starts the real Airflow
components (``AirflowStack``: api-server, scheduler, dag-processor, triggerer, LocalExecutor with parallelism 4)
once per Cosmos execution mode, the mode given to them by ``PACBOOK_COSMOS_EXECUTION_MODE``:

* ``local-runner`` — ``ExecutionMode.LOCAL`` + ``InvocationMode.DBT_RUNNER`` (dbt inside each task's process);
* ``local-subprocess`` — ``ExecutionMode.LOCAL`` + ``InvocationMode.SUBPROCESS`` (a ``dbt`` process per task);
* ``watcher`` — ``ExecutionMode.WATCHER`` (one ``dbt build`` per task group, one deferred task per node).

In each mode one nightly run of the whole DAG (untimed) extracts the source and builds the warehouse; then,
``--repeat`` times, the tasks of the three dbt task groups (staging, dwh, marts) of that run are cleared
through the REST API and the scheduler runs them again (watcher: a new nightly run instead, since Cosmos's
watcher tasks do not rerun the watcher way when cleared). The Cosmos figure is the span from the first dbt
task's start to the last one's end, read from the run's task instances (so the sensors, extraction and
everything after the marts are left out). Each Cosmos rerun alternates with one bare ``dbt build`` of the
whole project on the same warehouse, called the way the pipeline calls dbt (``dbt_cli.run_dbt``: the CLI
profile, 4 threads, the warehouse's kept target folder, the night's time in ``PACBOOK_SNAPSHOT_AT``): both
then redo the same work on a built warehouse with no new data, every node (the warehouse forgets its
builds before each Cosmos rerun, else state-aware builds would skip them all). The figures are medians
of ``--repeat``; results go to ``<state_dir>/bench/transform-<scale>.json``.

    PYTHONPATH=. .venv/bin/python -m bench.transform --scale 1 --repeat 3
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import re
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import psycopg

from bench.extraction import ensure_source, log, median, scale_tag, write_results
from bench.increment import quiet_pipeline_logs, use_a_pii_key_of_this_run
from include.pacbook import config, embedded_postgres
from include.pacbook.airflow_stack import AirflowStack, airflow_env, migrate_metadata
from include.pacbook.smtp_sink import running_smtp_sink

DEFAULT_PORT = 55480  # beside the extraction (55455) and increment (55456) benchmarks' servers
DEFAULT_AIRFLOW_PORT = 8892
WAREHOUSE_DB = "bench_transform_warehouse"
METADATA_DB = "bench_transform_airflow"
DBT_GROUPS = ("staging", "dwh", "marts")
TARGET_RATIO = 1.25
NIGHTLY_PARAMS = {"full_refresh": False, "dbt_select": "", "dry_run": False}


@dataclass
class CosmosRun:
    seconds: float  # first dbt task's start -> last dbt task's end
    tasks: int  # task instances in the three groups
    busy_seconds: float  # sum of the dbt tasks' durations
    slowest: list[tuple[str, float]] = field(default_factory=list)


@dataclass
class ModeResult:
    mode: str
    first_run_seconds: float  # the untimed nightly run's dbt span (into a warehouse built by earlier modes or none)
    cosmos: list[CosmosRun] = field(default_factory=list)
    bare: list[float] = field(default_factory=list)
    parse_seconds: list[float] = field(default_factory=list)  # the dag-processor's own "Last Duration" of the file
    error: str | None = None


# A row of the dag-processor's "DAG File Processing Stats": file, # DAGs, # errors, last duration, last run at.
PARSE_STATS_ROW = re.compile(r"pacbook_warehouse\.py\s+\d+\s+\d+\s+([\d.]+)s\s+\d{4}-\d\d-\d\dT")


def dag_processor_parse_seconds(log_dir: Path) -> list[float]:
    """How long the dag-processor itself took for the DAG file each time (fork, parse, serialize), from the
    stats table it logs every 30 s: the real figure behind bench/dag_parse.py's."""
    text = (log_dir / "dag-processor.log").read_text(errors="replace")
    return [float(match) for match in PARSE_STATS_ROW.findall(text)]


def _time(value: str) -> float:
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def dbt_task_instances(stack: AirflowStack, run_id: str) -> list[dict]:
    return [ti for ti in stack.task_instances(config.DAG_ID, run_id) if ti["task_id"].split(".")[0] in DBT_GROUPS]


def cosmos_span(stack: AirflowStack, run_id: str) -> CosmosRun:
    """The dbt part of a run, from its task instances: first start to last end."""
    tis = dbt_task_instances(stack, run_id)
    not_done = [f"{ti['task_id']} ({ti['state']})" for ti in tis if ti["state"] != "success"]
    if not_done:
        raise RuntimeError(f"dbt tasks not successful in {run_id}: {', '.join(not_done[:10])}")
    starts = [_time(ti["start_date"]) for ti in tis if ti["start_date"]]
    ends = [_time(ti["end_date"]) for ti in tis if ti["end_date"]]
    durations = {ti["task_id"]: float(ti["duration"] or 0.0) for ti in tis}
    slowest = sorted(durations.items(), key=lambda item: item[1], reverse=True)[:5]
    return CosmosRun(max(ends) - min(starts), len(tis), sum(durations.values()), slowest)


def rerun_dbt_groups(stack: AirflowStack, run_id: str, warehouse_uri: str, timeout: float) -> CosmosRun:
    """Clears the three dbt groups' tasks of a finished run; the scheduler runs them again (the DAG is
    unpaused meanwhile). AirflowStack has no clear call of its own, so the REST call is made here.
    The warehouse first forgets its builds: with nothing new to build, state-aware builds would skip
    every node, and the figure compares the same work as the bare `dbt build`: every node."""
    forget_builds(warehouse_uri)
    task_ids = [ti["task_id"] for ti in dbt_task_instances(stack, run_id)]
    body = {
        "dry_run": False,
        "dag_run_id": run_id,
        "task_ids": task_ids,
        "only_failed": False,
        "reset_dag_runs": True,
        "include_upstream": False,
        "include_downstream": False,
    }
    stack._request("POST", f"/api/v2/dags/{config.DAG_ID}/clearTaskInstances", body)
    stack.set_paused(config.DAG_ID, False)
    try:
        final = stack.wait_for_run(config.DAG_ID, run_id, timeout)
    finally:
        stack.set_paused(config.DAG_ID, True)
    if final["state"] != "success":
        raise RuntimeError(f"rerun of the dbt groups of {run_id} ended {final['state']}")
    return cosmos_span(stack, run_id)


def forget_builds(warehouse_uri: str) -> None:
    with psycopg.connect(warehouse_uri, autocommit=True) as conn:
        conn.execute("delete from audit.dbt_node_build")


def fresh_nightly_run(stack: AirflowStack, timeout: float) -> CosmosRun:
    """The watcher mode cannot be measured by clearing: a cleared producer skips itself and each cleared
    node task falls back to a dbt run of its own (Cosmos's retry behaviour), so it gets a new run of
    the whole DAG (nothing new to extract) and only its dbt span is kept."""
    final = stack.run_dag(config.DAG_ID, NIGHTLY_PARAMS, timeout=timeout)
    if final["state"] != "success":
        raise RuntimeError(f"nightly run {final['dag_run_id']} ended {final['state']}")
    return cosmos_span(stack, final["dag_run_id"])


def bare_dbt_build(warehouse_uri: str, snapshot_at: str) -> float:
    """One `dbt build` of the whole project, as the pipeline calls dbt (dbt_cli.run_dbt)."""
    from include.pacbook.dbt_cli import run_dbt

    started = time.perf_counter()
    run_dbt("build", snapshot_at=snapshot_at, warehouse_uri=warehouse_uri)
    return time.perf_counter() - started


def stack_env(srv: embedded_postgres.EmbeddedServer, source_uri: str, warehouse_uri: str, mode: str, port: int):
    bench_dir = config.state_dir() / "bench"
    metadata = srv.uri(METADATA_DB).replace("postgresql://", "postgresql+psycopg2://", 1)
    connections = {"AIRFLOW_CONN_PACBOOK_SOURCE": source_uri, "AIRFLOW_CONN_PACBOOK_WAREHOUSE": warehouse_uri}
    env = airflow_env(metadata, connections, home=bench_dir / "airflow-transform", port=port)
    env["PACBOOK_COSMOS_EXECUTION_MODE"] = mode
    # No publisher files, so the landing sensor skips at once; outputs stay in the bench's folder.
    env["PACBOOK_LANDING_DIR"] = str(bench_dir / "transform-landing")
    env["PACBOOK_LANDING_WAIT_SECONDS"] = "0"
    env["PACBOOK_EXPORTS_DIR"] = str(bench_dir / "transform-exports")
    env["PACBOOK_REPORTS_DIR"] = str(bench_dir / "transform-reports")
    env["PACBOOK_SMTP_SINK_DIR"] = str(bench_dir / "transform-mail")
    return env


def measure_mode(
    srv: embedded_postgres.EmbeddedServer,
    source_uri: str,
    warehouse_uri: str,
    mode: str,
    args: argparse.Namespace,
) -> ModeResult:
    bench_dir = config.state_dir() / "bench"
    with running_smtp_sink(0, bench_dir / "transform-mail") as sink:
        env = stack_env(srv, source_uri, warehouse_uri, mode, args.airflow_port)
        env["PACBOOK_SMTP_PORT"] = str(sink.port)
        log(f"{mode}: starting Airflow on 127.0.0.1:{args.airflow_port}")
        log_dir = bench_dir / f"airflow-transform-components-{mode}"
        for old in log_dir.glob("*.log"):
            old.unlink()
        with AirflowStack(env, log_dir) as stack:
            first = stack.run_latest_interval(config.DAG_ID, NIGHTLY_PARAMS, timeout=args.run_timeout)
            run_id = first["dag_run_id"]
            if first["state"] != "success":
                failed = [
                    ti["task_id"] for ti in stack.task_instances(config.DAG_ID, run_id) if ti["state"] == "failed"
                ]
                raise RuntimeError(f"{mode}: the nightly run {run_id} failed: {', '.join(failed)}")
            result = ModeResult(mode, cosmos_span(stack, run_id).seconds)
            end = first.get("data_interval_end") or first.get("run_after")
            snapshot_at = dt.datetime.fromisoformat(end.replace("Z", "+00:00")).strftime("%Y-%m-%d %H:%M:%S")
            log(f"{mode}: nightly run {run_id} done, its dbt groups took {result.first_run_seconds:.1f} s")
            for rep in range(1, args.repeat + 1):
                # Alternating which goes first keeps a trend in the machine's load from favouring either.
                steps = ("cosmos", "bare") if rep % 2 else ("bare", "cosmos")
                for step in steps:
                    if step == "cosmos":
                        run = (
                            fresh_nightly_run(stack, args.run_timeout)
                            if mode == "watcher"
                            else rerun_dbt_groups(stack, run_id, warehouse_uri, args.run_timeout)
                        )
                        result.cosmos.append(run)
                        log(f"{mode} run {rep}: Cosmos {run.seconds:6.1f} s, {run.tasks} tasks")
                    else:
                        seconds = bare_dbt_build(warehouse_uri, snapshot_at)
                        result.bare.append(seconds)
                        log(f"{mode} run {rep}: bare dbt build {seconds:6.1f} s")
        result.parse_seconds = dag_processor_parse_seconds(log_dir)
    return result


# --------------------------------------------------------------------------------------------- reporting


def figures(results: list[ModeResult]) -> list[dict]:
    rows = []
    for result in results:
        name = f"Cosmos dbt groups ({result.mode}) vs bare dbt build"
        if result.error or not result.cosmos:
            rows.append({"figure": name, "mode": result.mode, "error": result.error or "no run", "holds": False})
            continue
        ours, baseline = median([run.seconds for run in result.cosmos]), median(result.bare)
        rows.append(
            {
                "figure": name,
                "mode": result.mode,
                "ours_s": round(ours, 2),
                "baseline_s": round(baseline, 2),
                "ratio": round(ours / baseline, 3),
                "target": f"<= {TARGET_RATIO:.2f}x",
                "holds": ours / baseline <= TARGET_RATIO,
            }
        )
    return rows


def render_table(rows: list[dict]) -> str:
    header = ("figure", "ours", "baseline", "ratio", "target", "holds?")
    cells = [header]
    for r in rows:
        if "error" in r:
            cells.append((r["figure"], "-", "-", "-", f"<= {TARGET_RATIO:.2f}x", f"NO ({r['error'][:60]})"))
        else:
            cells.append(
                (
                    r["figure"],
                    f"{r['ours_s']:.1f} s",
                    f"{r['baseline_s']:.1f} s",
                    f"{r['ratio']:.2f}x",
                    r["target"],
                    "yes" if r["holds"] else "NO",
                )
            )
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = [" | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in cells]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(lines)


def details(results: list[ModeResult]) -> list[str]:
    lines = []
    for result in results:
        if result.error:
            lines.append(f"  {result.mode}: failed: {result.error}")
            continue
        cosmos = ", ".join(f"{run.seconds:.1f}" for run in result.cosmos)
        bare = ", ".join(f"{seconds:.1f}" for seconds in result.bare)
        busy = median([run.busy_seconds for run in result.cosmos])
        tasks = result.cosmos[0].tasks if result.cosmos else 0
        lines.append(f"  {result.mode}: Cosmos ({cosmos}) s, bare ({bare}) s; {tasks} dbt tasks, {busy:.0f} s busy")
        lines.append(f"    first nightly run's dbt groups (untimed run): {result.first_run_seconds:.1f} s")
        if result.parse_seconds:
            parses = result.parse_seconds
            lines.append(
                f"    dag-processor's own parse of the DAG file: median {median(parses):.2f} s "
                f"(min {min(parses):.2f}, max {max(parses):.2f}, {len(parses)} parses)"
            )
        if result.cosmos:
            middle = sorted(result.cosmos, key=lambda run: run.seconds)[len(result.cosmos) // 2]
            slow = ", ".join(f"{task} {seconds:.1f} s" for task, seconds in middle.slowest)
            lines.append(f"    slowest tasks (median rerun): {slow}")
    return lines


# --------------------------------------------------------------------------------------------- main


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Time the Cosmos-rendered dbt run against one bare dbt build.")
    parser.add_argument("--scale", type=float, default=1.0, help="source scale (1 = the real shop; default 1)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per figure; the median is reported (default 3)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"embedded PostgreSQL port ({DEFAULT_PORT})")
    parser.add_argument("--airflow-port", type=int, default=DEFAULT_AIRFLOW_PORT, help="Airflow API port")
    parser.add_argument(
        "--modes",
        default=",".join(config.COSMOS_EXECUTION_MODES),
        help=f"execution modes to measure, comma-separated (default {','.join(config.COSMOS_EXECUTION_MODES)})",
    )
    parser.add_argument("--run-timeout", type=float, default=1800, help="seconds to wait for one run (1800)")
    args = parser.parse_args(argv)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = set(modes) - set(config.COSMOS_EXECUTION_MODES)
    if unknown:
        parser.error(f"unknown modes: {', '.join(sorted(unknown))}")

    # A killed benchmark still stops its Airflow components and its PostgreSQL (the `finally` blocks).
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    quiet_pipeline_logs()
    use_a_pii_key_of_this_run()
    bench_dir = config.state_dir() / "bench"
    bench_dir.mkdir(parents=True, exist_ok=True)
    srv = embedded_postgres.server(root=bench_dir / "postgres-transform", port=args.port)
    started_at = dt.datetime.now(dt.UTC)
    load_before = os.getloadavg()
    log(f"embedded PostgreSQL on 127.0.0.1:{args.port} ({srv.root})")
    embedded_postgres.start(srv)
    results: list[ModeResult] = []
    try:
        source_uri = ensure_source(srv, args.scale, args.seed)
        warehouse_uri = embedded_postgres.create_database(srv, WAREHOUSE_DB, drop_first=True)
        embedded_postgres.create_database(srv, METADATA_DB, drop_first=True)
        migrate_metadata(stack_env(srv, source_uri, warehouse_uri, modes[0], args.airflow_port))
        for mode in modes:
            try:
                results.append(measure_mode(srv, source_uri, warehouse_uri, mode, args))
            except Exception as error:  # noqa: BLE001 - one mode failing must not hide the others' figures
                log(f"{mode}: failed: {error}")
                results.append(ModeResult(mode, 0.0, error=str(error).splitlines()[0][:300]))
    finally:
        embedded_postgres.stop(srv)
        log("embedded PostgreSQL stopped")
    load_after = os.getloadavg()

    rows = figures(results)
    print(f"\nCosmos-rendered dbt run vs one bare dbt build, scale {args.scale:g}, median of {args.repeat}")
    print(render_table(rows))
    print("\nper mode (seconds, each run):")
    print("\n".join(details(results)))
    print(f"\n  load average (1 min) before/after: {load_before[0]:.2f} / {load_after[0]:.2f} on {os.cpu_count()} CPUs")
    result = {
        "benchmark": "transform",
        "started_at": started_at.isoformat(timespec="seconds"),
        "scale": args.scale,
        "repeat": args.repeat,
        "figures": rows,
        "modes": [asdict(r) for r in results],
    }
    write_results(bench_dir / f"transform-{scale_tag(args.scale)}.json", result, load_before, load_after)
    return 0 if all("error" not in row for row in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
