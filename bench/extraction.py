"""Benchmark of the extraction (source -> warehouse ``staging``) against its limit and a typical pandas copy.

On its own embedded PostgreSQL (``<state_dir>/bench/postgres``) and the same generated source, it measures:

* **ours**   — ``extract_source`` of the 15 tables (Luigi, 4 workers, streaming binary COPY) into a fresh
  warehouse database, in rows/s (rows copied / wall seconds of the call);
* **limit**  — the same tables piped ``psql \\copy ... to stdout | psql \\copy ... from stdin`` between the same
  two databases into pre-created tables, 4 tables at a time, in rows/s;
* **pandas** — ``pandas.read_sql`` + ``DataFrame.to_sql`` (SQLAlchemy ``postgresql+psycopg``, ``chunksize=10_000``,
  one table after the other, as a typical peer project does), in rows/s; when a full pandas copy would not fit the
  time budget, only ``order_line`` and ``order_history`` are copied and ours is measured on the same two tables;
* **memory** — peak memory of ``extract_source`` run in a child ``python -c`` process, Luigi's forked workers
  included, at each of ``--memory-scales``.

Each timing is repeated ``--repeat`` times (interleaved, so a burst of load from another job hits all three alike)
and the median is reported. Results also go to ``<state_dir>/bench/extraction-<scale>.json``.

    PYTHONPATH=. .venv/bin/python -m bench.extraction --scale 10 --repeat 3 [--memory-scales 10,100]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import psycopg
from psycopg import sql

from include.luigi_tasks.streaming_copy import source_columns
from include.pacbook import config, embedded_postgres
from include.pacbook.source_generator import generate_source

DEFAULT_PORT = 55455
BENCH_WAREHOUSE_DB = "bench_warehouse"
PANDAS_CORE_TABLES = ("order_line", "order_history")
PANDAS_CHUNKSIZE = 10_000
MiB = 1024 * 1024

# Targets (ratio of ours to the baseline, or of the larger scale's peak memory to the smaller's).
TARGET_VS_LIMIT = 0.8
TARGET_VS_PANDAS = 20.0
TARGET_MEMORY_GROWTH = 1.25  # streaming: peak memory should not grow with the data

# The extraction run by the memory probe: nothing but what a pipeline run imports (no pandas, no bench code).
MEMORY_CHILD = """
import json, sys
import luigi.configuration
cfg = luigi.configuration.get_config()
if not cfg.has_section("core"):
    cfg.add_section("core")
cfg.set("core", "no_configure_logging", "true")
from include.luigi_tasks.extract_source import extract_source
rows = extract_source(sys.argv[1], workers=int(sys.argv[2]))
print(json.dumps({"rows": sum(rows.values())}))
"""


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def quiet_luigi() -> None:
    """Luigi otherwise logs every task at INFO on stderr; its warnings and errors still show."""
    import luigi.configuration

    cfg = luigi.configuration.get_config()
    if not cfg.has_section("core"):
        cfg.add_section("core")
    cfg.set("core", "no_configure_logging", "true")


def scale_tag(scale: float) -> str:
    return f"{scale:g}".replace(".", "_")


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


# --------------------------------------------------------------------------------------------- databases


def ensure_source(srv: embedded_postgres.EmbeddedServer, scale: float, seed: int) -> str:
    """The generated source at this scale, in its own database; generated only when not already there."""
    name = f"bench_source_s{scale_tag(scale)}" + ("" if seed == 42 else f"_seed{seed}")
    marker = f"pacbook bench source scale={scale:g} seed={seed} tables={len(config.SOURCE_TABLES)}"
    uri = embedded_postgres.create_database(srv, name)
    with psycopg.connect(uri) as conn:
        comment = conn.execute(
            "select shobj_description(oid, 'pg_database') from pg_database where datname = current_database()"
        ).fetchone()[0]
    if comment == marker:
        log(f"source {name}: cached")
        return uri
    log(f"source {name}: generating at scale {scale:g} (seed {seed}) ...")
    started = time.perf_counter()
    generate_source(uri, scale=scale, seed=seed, replace=True)
    with psycopg.connect(uri, autocommit=True) as conn:
        conn.execute(sql.SQL("comment on database {} is {}").format(sql.Identifier(name), sql.Literal(marker)))
    log(f"source {name}: generated in {time.perf_counter() - started:.1f} s")
    return uri


def source_counts(uri: str, tables: Sequence[str]) -> dict[str, int]:
    """Exact row counts (reading every table also warms the caches before the first timed run)."""
    with psycopg.connect(uri) as conn:
        return {
            t: conn.execute(sql.SQL("select count(*) from public.{}").format(sql.Identifier(t))).fetchone()[0]
            for t in tables
        }


def fresh_warehouse(srv: embedded_postgres.EmbeddedServer) -> str:
    """An empty warehouse database; a checkpoint first, so no run pays for flushing the previous run's writes."""
    uri = embedded_postgres.create_database(srv, BENCH_WAREHOUSE_DB, drop_first=True)
    with psycopg.connect(srv.uri("postgres"), autocommit=True) as conn:
        conn.execute("checkpoint")
    return uri


def create_staging_tables(source_uri: str, warehouse_uri: str, tables: Sequence[str]) -> None:
    """Empty staging tables with the source's column types (what ours creates on its first load)."""
    with psycopg.connect(source_uri) as source, psycopg.connect(warehouse_uri) as warehouse:
        warehouse.execute("create schema if not exists staging")
        for table in tables:
            columns = sql.SQL(", ").join(
                sql.SQL("{} {}").format(sql.Identifier(c.name), sql.SQL(c.type)) for c in source_columns(source, table)
            )
            warehouse.execute(sql.SQL("create table staging.{} ({})").format(sql.Identifier(table), columns))


# --------------------------------------------------------------------------------------------- the three copies


def run_ours(
    srv: embedded_postgres.EmbeddedServer,
    source_uri: str,
    tables: Sequence[str],
    workers: int,
    run_id: str,
    copy_windows: list[dict],
) -> tuple[int, float]:
    """Times extract_source; appends to copy_windows the span from the first table's start to the last table's
    commit (audit.extract_load), so the time Luigi and setup add around the copies can be told apart."""
    from include.luigi_tasks.extract_source import extract_source

    warehouse_uri = fresh_warehouse(srv)
    os.environ["AIRFLOW_CONN_PACBOOK_SOURCE"] = source_uri
    os.environ["AIRFLOW_CONN_PACBOOK_WAREHOUSE"] = warehouse_uri
    config._pinned_connections.clear()  # extract_source pins the URIs once per process
    started = time.perf_counter()
    rows = extract_source(run_id, tables=tuple(tables), workers=workers)
    seconds = time.perf_counter() - started
    with psycopg.connect(warehouse_uri) as conn:
        window, busy = conn.execute(
            "select extract(epoch from max(finished_at) - min(started_at)),"
            " extract(epoch from sum(finished_at - started_at)) from audit.extract_load where run_id = %s",
            (run_id,),
        ).fetchone()
    copy_windows.append({"copy_window_seconds": round(float(window), 3), "table_seconds_sum": round(float(busy), 3)})
    return sum(rows.values()), seconds


def _psql(uri: str, command: str) -> list[str]:
    return [str(embedded_postgres.bin_dir() / "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", uri, "-c", command]


def _pipe_table(source_uri: str, warehouse_uri: str, table: str) -> None:
    reader = subprocess.Popen(
        _psql(source_uri, f"\\copy (select * from public.{table}) to stdout"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    writer = subprocess.Popen(
        _psql(warehouse_uri, f"\\copy staging.{table} from stdin"),
        stdin=reader.stdout,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    reader.stdout.close()  # the writer holds the pipe now; the reader gets SIGPIPE if the writer dies
    _, writer_err = writer.communicate()
    reader_err = reader.stderr.read()
    reader.stderr.close()
    reader.wait()
    if reader.returncode or writer.returncode:
        raise RuntimeError(f"psql pipe for {table} failed: {reader_err.decode()} {writer_err.decode()}".strip())


def run_limit(
    srv: embedded_postgres.EmbeddedServer,
    source_uri: str,
    tables: Sequence[str],
    counts: dict[str, int],
    workers: int,
) -> tuple[int, float]:
    warehouse_uri = fresh_warehouse(srv)
    create_staging_tables(source_uri, warehouse_uri, tables)
    started = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
        for future in [pool.submit(_pipe_table, source_uri, warehouse_uri, t) for t in tables]:
            future.result()
    seconds = time.perf_counter() - started
    return sum(counts[t] for t in tables), seconds


def run_pandas(srv: embedded_postgres.EmbeddedServer, source_uri: str, tables: Sequence[str]) -> tuple[int, float]:
    import pandas as pd
    import sqlalchemy

    warehouse_uri = fresh_warehouse(srv)
    with psycopg.connect(warehouse_uri, autocommit=True) as conn:
        conn.execute("create schema staging")
    source = sqlalchemy.create_engine(source_uri.replace("postgresql://", "postgresql+psycopg://", 1))
    warehouse = sqlalchemy.create_engine(warehouse_uri.replace("postgresql://", "postgresql+psycopg://", 1))
    rows = 0
    try:
        started = time.perf_counter()
        for table in tables:
            frame = pd.read_sql(f"select * from public.{table}", source)
            frame.to_sql(
                table, warehouse, schema="staging", if_exists="replace", index=False, chunksize=PANDAS_CHUNKSIZE
            )
            rows += len(frame)
            del frame
        seconds = time.perf_counter() - started
    finally:
        source.dispose()
        warehouse.dispose()
    return rows, seconds


# --------------------------------------------------------------------------------------------- memory


@dataclass
class MemoryProbe:
    scale: float
    rows: int
    seconds: float
    peak_tree_pss_mib: float  # sampled sum over the process tree of proportional set sizes (shared pages split)
    peak_tree_rss_mib: float  # sampled sum of resident set sizes (counts pages shared after fork once per process)
    peak_process_rss_mib: float  # the largest single process (kernel's peak, via /usr/bin/time; else sampled)
    peak_processes: int
    samples: int


def _tree_memory(processes: list[psutil.Process]) -> tuple[int, int, int, int]:
    """Sums of PSS and RSS over the processes, the largest single RSS, and how many were read."""
    pss = rss = largest = count = 0
    for process in processes:
        try:
            info = process.memory_full_info()
        except psutil.Error:  # ended between listing and reading
            continue
        pss += getattr(info, "pss", info.rss)
        rss += info.rss
        largest = max(largest, info.rss)
        count += 1
    return pss, rss, largest, count


def probe_memory(source_uri: str, warehouse_uri: str, scale: float, workers: int) -> MemoryProbe:
    """Runs extract_source in a child process and samples its whole process tree until it ends.

    The kernel's peak RSS comes from /usr/bin/time (when present), not from this process's wait4: a child
    spawned straight from here inherits, through vfork + exec, this process's own high-water mark (which
    the source generator, run in this process, pushes to ~900 MiB at scale 100).
    """
    env = {
        **os.environ,
        "AIRFLOW_CONN_PACBOOK_SOURCE": source_uri,
        "AIRFLOW_CONN_PACBOOK_WAREHOUSE": warehouse_uri,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(config.PROJECT_ROOT), os.environ.get("PYTHONPATH")])),
    }
    command = [sys.executable, "-c", MEMORY_CHILD, f"bench-memory-s{scale_tag(scale)}", str(workers)]
    timer = Path("/usr/bin/time")
    with tempfile.TemporaryDirectory() as folder:
        out, err, maxrss_file = (Path(folder) / name for name in ("out", "err", "maxrss"))
        if timer.exists():
            command = [str(timer), "-f", "%M", "-o", str(maxrss_file), *command]
        started = time.perf_counter()
        with out.open("wb") as out_file, err.open("wb") as err_file:
            child = subprocess.Popen(command, env=env, stdout=out_file, stderr=err_file, cwd=config.PROJECT_ROOT)
            root = psutil.Process(child.pid)
            peak_pss = peak_rss = peak_largest = peak_count = samples = 0
            while child.poll() is None:
                try:
                    processes = root.children(recursive=True) if timer.exists() else [root, *root.children(True)]
                except psutil.Error:
                    continue
                pss, rss, largest, count = _tree_memory(processes)
                peak_pss, peak_rss = max(peak_pss, pss), max(peak_rss, rss)
                peak_largest, peak_count = max(peak_largest, largest), max(peak_count, count)
                samples += 1
                time.sleep(0.02)
        seconds = time.perf_counter() - started
        if child.returncode:
            raise RuntimeError(f"memory probe failed ({child.returncode}): {err.read_text()[-3000:]}")
        rows = json.loads(out.read_text().strip().splitlines()[-1])["rows"]
        if maxrss_file.exists():
            peak_largest = int(maxrss_file.read_text().split()[-1]) * 1024  # KiB, largest process in the tree
    return MemoryProbe(
        scale=scale,
        rows=rows,
        seconds=seconds,
        peak_tree_pss_mib=peak_pss / MiB,
        peak_tree_rss_mib=peak_rss / MiB,
        peak_process_rss_mib=peak_largest / MiB,
        peak_processes=peak_count,
        samples=samples,
    )


# --------------------------------------------------------------------------------------------- reporting


@dataclass
class Series:
    """Repeated measurements of one copy method on one set of tables."""

    name: str
    tables: tuple[str, ...]
    rows: int = 0
    seconds: list[float] = field(default_factory=list)

    def add(self, rows: int, seconds: float) -> None:
        if self.rows and rows != self.rows:
            raise RuntimeError(f"{self.name}: copied {rows} rows, an earlier run copied {self.rows}")
        self.rows = rows
        self.seconds.append(seconds)

    @property
    def median_seconds(self) -> float:
        return median(self.seconds)

    @property
    def rate(self) -> float:
        return self.rows / self.median_seconds

    def as_dict(self) -> dict:
        return {
            "tables": list(self.tables),
            "rows": self.rows,
            "seconds": [round(s, 3) for s in self.seconds],
            "median_seconds": round(self.median_seconds, 3),
            "rows_per_second": round(self.rate),
        }


def _rate(value: float) -> str:
    return f"{value:,.0f} rows/s"


def render_table(rows: list[dict]) -> str:
    header = ("figure", "ours", "baseline", "ratio", "target", "holds?")
    cells = [header] + [
        (r["figure"], r["ours"], r["baseline"], r["ratio"], r["target"], "yes" if r["holds"] else "NO") for r in rows
    ]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = [" | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in cells]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(lines)


def comparisons(
    ours: Series, limit: Series, pandas: Series, ours_core: Series | None, memory: list[MemoryProbe], scale: float
) -> list[dict]:
    rows = []
    ratio = ours.rate / limit.rate
    rows.append(
        {
            "figure": f"throughput vs psql \\copy pipe, {len(ours.tables)} tables",
            "ours": _rate(ours.rate),
            "baseline": _rate(limit.rate),
            "ratio": f"{ratio:.2f}x",
            "target": f">= {TARGET_VS_LIMIT}x",
            "holds": ratio >= TARGET_VS_LIMIT,
            "value": ratio,
        }
    )
    if pandas.seconds:
        mine = ours_core if ours_core is not None else ours
        ratio = mine.rate / pandas.rate
        on = "+".join(pandas.tables) if ours_core else "15 tables"
        rows.append(
            {
                "figure": f"throughput vs pandas read_sql/to_sql, {on}",
                "ours": _rate(mine.rate),
                "baseline": _rate(pandas.rate),
                "ratio": f"{ratio:.1f}x",
                "target": f">= {TARGET_VS_PANDAS:g}x",
                "holds": ratio >= TARGET_VS_PANDAS,
                "value": ratio,
            }
        )
    if len(memory) >= 2:
        small, large = min(memory, key=lambda m: m.scale), max(memory, key=lambda m: m.scale)
        ratio = large.peak_tree_pss_mib / small.peak_tree_pss_mib
        rows.append(
            {
                "figure": f"peak memory (tree PSS), scale {large.scale:g} vs {small.scale:g}",
                "ours": f"{large.peak_tree_pss_mib:.0f} MiB",
                "baseline": f"{small.peak_tree_pss_mib:.0f} MiB",
                "ratio": f"{ratio:.2f}x",
                "target": f"<= {TARGET_MEMORY_GROWTH}x (flat)",
                "holds": ratio <= TARGET_MEMORY_GROWTH,
                "value": ratio,
            }
        )
    elif memory:
        probe = memory[0]
        rows.append(
            {
                "figure": f"peak memory (tree PSS), scale {probe.scale:g}",
                "ours": f"{probe.peak_tree_pss_mib:.0f} MiB",
                "baseline": "-",
                "ratio": "-",
                "target": "(use --memory-scales a,b)",
                "holds": True,
                "value": None,
            }
        )
    return rows


# --------------------------------------------------------------------------------------------- main


def _pandas_tables(
    choice: str,
    measure: Callable[[Sequence[str]], tuple[int, float]],
    counts: dict[str, int],
    repeat: int,
    budget: float,
) -> tuple[tuple[str, ...], tuple[int, float] | None]:
    """Which tables pandas copies; 'auto' times it on the two big tables and extrapolates to all 15.

    Returns the tables and, when the calibration run is on those same tables, that run (kept as the first sample).
    """
    all_tables, core = tuple(config.SOURCE_TABLES), PANDAS_CORE_TABLES
    if choice == "all":
        return all_tables, None
    if choice == "core":
        return core, None
    if choice == "none":
        return (), None
    import pandas  # noqa: F401 - imported once before any timed run, so no run pays for the import
    import sqlalchemy  # noqa: F401

    rows, seconds = measure(core)
    estimate = seconds * sum(counts.values()) / rows * repeat
    log(f"pandas calibration: {rows:,} rows in {seconds:.1f} s; all 15 tables x{repeat} would take ~{estimate:.0f} s")
    if estimate <= budget:
        return all_tables, None
    log(f"pandas: over the {budget:.0f} s budget, measuring {'+'.join(core)} only (ours too, on the same tables)")
    return core, (rows, seconds)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Benchmark the extraction against psql \\copy and pandas.")
    parser.add_argument("--scale", type=float, default=10.0, help="source scale (1 = the real shop; default 10)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per figure; the median is reported (default 3)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"embedded PostgreSQL port ({DEFAULT_PORT})")
    parser.add_argument("--workers", type=int, default=4, help="parallel tables, ours and the psql limit (4)")
    parser.add_argument(
        "--memory-scales", default=None, help="comma-separated scales for the memory probe (default: --scale)"
    )
    parser.add_argument(
        "--pandas-tables",
        choices=("auto", "all", "core", "none"),
        default="auto",
        help="auto: all 15 tables unless that exceeds --pandas-budget, then order_line+order_history; none: skip",
    )
    parser.add_argument("--pandas-budget", type=float, default=180.0, help="seconds for all pandas runs (auto mode)")
    args = parser.parse_args(argv)
    memory_scales = [float(s) for s in (args.memory_scales or f"{args.scale:g}").split(",") if s.strip()]

    quiet_luigi()
    bench_dir = config.state_dir() / "bench"
    bench_dir.mkdir(parents=True, exist_ok=True)
    srv = embedded_postgres.server(root=bench_dir / "postgres", port=args.port)
    started_at = dt.datetime.now(dt.UTC)
    load_before = os.getloadavg()
    log(f"embedded PostgreSQL on 127.0.0.1:{args.port} ({srv.root})")
    embedded_postgres.start(srv)
    try:
        source_uri = ensure_source(srv, args.scale, args.seed)
        tables = tuple(config.SOURCE_TABLES)
        counts = source_counts(source_uri, tables)
        log(f"source: {sum(counts.values()):,} rows in {len(tables)} tables; largest {max(counts, key=counts.get)}")

        ours, limit = Series("ours", tables), Series("limit", tables)
        ours_windows: list[dict] = []
        pandas_tables, first = _pandas_tables(
            args.pandas_tables, lambda t: run_pandas(srv, source_uri, t), counts, args.repeat, args.pandas_budget
        )
        pandas = Series("pandas", pandas_tables)
        ours_core = Series("ours", pandas_tables) if pandas_tables not in (tables, ()) else None
        if first:
            pandas.add(*first)
        for i in range(1, args.repeat + 1):
            ours.add(*run_ours(srv, source_uri, tables, args.workers, f"bench-ours-{i}", ours_windows))
            log(f"run {i}: ours   {ours.rows:,} rows in {ours.seconds[-1]:.2f} s")
            limit.add(*run_limit(srv, source_uri, tables, counts, args.workers))
            log(f"run {i}: limit  {limit.rows:,} rows in {limit.seconds[-1]:.2f} s")
            if ours_core is not None:
                ours_core.add(*run_ours(srv, source_uri, pandas_tables, args.workers, f"bench-ours-core-{i}", []))
                core = "+".join(pandas_tables)
                log(f"run {i}: ours ({core}) {ours_core.rows:,} rows in {ours_core.seconds[-1]:.2f} s")
            if pandas_tables and len(pandas.seconds) < args.repeat:
                pandas.add(*run_pandas(srv, source_uri, pandas_tables))
                log(f"run {i}: pandas {pandas.rows:,} rows in {pandas.seconds[-1]:.2f} s")

        memory = []
        for scale in memory_scales:
            scale_source = source_uri if scale == args.scale else ensure_source(srv, scale, args.seed)
            probe = probe_memory(scale_source, fresh_warehouse(srv), scale, args.workers)
            log(
                f"memory at scale {scale:g}: {probe.rows:,} rows in {probe.seconds:.1f} s, "
                f"peak tree PSS {probe.peak_tree_pss_mib:.0f} MiB, RSS {probe.peak_tree_rss_mib:.0f} MiB "
                f"({probe.peak_processes} processes), largest process {probe.peak_process_rss_mib:.0f} MiB"
            )
            memory.append(probe)
    finally:
        embedded_postgres.stop(srv)
        log("embedded PostgreSQL stopped")

    figures = comparisons(ours, limit, pandas, ours_core, memory, args.scale)
    print(
        f"\nExtraction benchmark, scale {args.scale:g} ({sum(counts.values()):,} source rows), median of {args.repeat}"
    )
    print(render_table(figures))
    print("\nraw medians:")
    for series in (s for s in (ours, limit, ours_core, pandas) if s is not None and s.seconds):
        label = series.name if series.tables == tables else f"{series.name} [{'+'.join(series.tables)}]"
        runs = ", ".join(f"{s:.2f}" for s in series.seconds)
        print(
            f"  {label:<32} {series.rows:>10,} rows  {series.median_seconds:8.2f} s  {_rate(series.rate):>18}  ({runs})"
        )
    windows = [w["copy_window_seconds"] for w in ours_windows]
    print(
        f"  ours, first table start -> last table commit: median {median(windows):.2f} s of the "
        f"{ours.median_seconds:.2f} s wall (the rest: Luigi scheduling, completeness checks, analyze, forks)"
    )
    for probe in memory:
        print(
            f"  memory scale {probe.scale:<6g} {probe.rows:>10,} rows  {probe.seconds:8.2f} s  "
            f"tree PSS {probe.peak_tree_pss_mib:.0f} MiB, tree RSS {probe.peak_tree_rss_mib:.0f} MiB, "
            f"largest process {probe.peak_process_rss_mib:.0f} MiB, {probe.peak_processes} processes"
        )
    load_after = os.getloadavg()
    print(f"  load average (1 min) before/after: {load_before[0]:.2f} / {load_after[0]:.2f} on {os.cpu_count()} CPUs")

    result = {
        "benchmark": "extraction",
        "started_at": started_at.isoformat(timespec="seconds"),
        "command": " ".join(["python -m bench.extraction", *(argv if argv is not None else sys.argv[1:])]),
        "scale": args.scale,
        "seed": args.seed,
        "repeat": args.repeat,
        "workers": args.workers,
        "source_rows": counts,
        "ours": ours.as_dict() | {"copy_windows": ours_windows},
        "limit": limit.as_dict(),
        "pandas": pandas.as_dict() if pandas.seconds else None,
        "ours_on_pandas_tables": ours_core.as_dict() if ours_core else None,
        "memory": [vars(p) | {k: round(v, 1) for k, v in vars(p).items() if isinstance(v, float)} for p in memory],
        "figures": [{k: v for k, v in f.items() if k != "value"} | {"ratio": f["value"]} for f in figures],
    }
    write_results(bench_dir / f"extraction-{scale_tag(args.scale)}.json", result, load_before, load_after)
    return 0


def write_results(out: Path, result: dict, load_before: tuple[float, ...], load_after: tuple[float, ...]) -> None:
    """The benchmark's figures as JSON, with the machine they were measured on."""
    machine = {"cpus": os.cpu_count(), "python": platform.python_version()}
    result = result | {"machine": machine | {"load_before": load_before, "load_after": load_after}}
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nresults written to {out}")


if __name__ == "__main__":
    raise SystemExit(main())
