"""Benchmark of a nightly increment (1% new orders) against a full rebuild, on the same data in the same run.

On its own embedded PostgreSQL (``<state_dir>/bench/postgres-increment``) and one generated source, it measures:

* **full rebuild** — into an empty warehouse: ``extract_source`` of night N+1 with ``full_refresh=True``, then
  ``dbt build --full-refresh`` (every model, snapshot, seed and test);
* **nightly increment** — into a warehouse that has already loaded and built night N (prepared untimed, the
  way the nightly run left it): ``extract_source`` of night N+1 (the growing tables by increment), then
  the state-aware ``dbt build`` of the nightly run (``dbt_cli.build_changed``, ``build_state.py``): the nodes
  whose staging tables or parents changed since their last build, with their tests (fct_sales and
  fct_order_fulfilment incremental); the nodes nothing changed for are left as they are.

Night N is the generator's last day of orders; night N+1 holds the new orders this benchmark adds to the
source once (1% of the existing orders, 1-3 lines and 1-2 status events each) plus a late Cancelled event
for ~0.1% of the old, not yet delivered orders, so the increment restates some old orders too.

The two are interleaved (their order alternates) so that load from other jobs on the machine hits both alike;
each figure is the median of ``--repeat`` runs. After each pair, the order facts of both warehouses are
compared: the increment must end where the full rebuild does. Results go to
``<state_dir>/bench/increment-<scale>.json``.

    PYTHONPATH=. .venv/bin/python -m bench.increment --scale 10 --repeat 3
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import logging
import os
import secrets
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import psycopg

from bench.extraction import ensure_source, fresh_warehouse, log, median, quiet_luigi, scale_tag, write_results
from include.luigi_tasks.extract_source import extract_source
from include.pacbook import config, embedded_postgres
from include.pacbook.dbt_cli import (
    changed_selection,
    dbt_command,
    dbt_env,
    dbt_target,
    record_builds,
    warehouse_clock,
)

DEFAULT_PORT = 55456  # the extraction benchmark's server uses 55455: both can run at the same time
NIGHTLY_WAREHOUSE_DB = "bench_warehouse_nightly"  # the full rebuild uses bench.extraction's bench_warehouse

LAST_ORDER_DAY = dt.date(2024, 3, 26)  # the source generator's default end_date: night N
NEW_ORDER_SHARE = 0.01
LATE_CANCELLATION_SHARE = 0.001
CANCELLED = 5  # order_status.status_id

FACT_MODELS = ("fct_sales", "fct_order_fulfilment", "fct_customer_monthly")
FACTS = "facts (fct_sales, fct_order_fulfilment, fct_customer_monthly)"
# The dbt node groups in the order a build meets them.
NODE_GROUPS = (
    "seeds",
    "snapshots",
    "staging and intermediate views",
    "dims and other dwh tables",
    FACTS,
    "marts",
    "tests on the facts",
    "other tests",
    "unit tests",
)
TARGET_RATIO = 0.10


Interval = tuple[dt.datetime, dt.datetime]


def night(day: dt.date) -> Interval:
    """A nightly run's data interval: the whole UTC day."""
    start = dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC)
    return start, start + dt.timedelta(days=1)


NIGHT_BEFORE_N = night(LAST_ORDER_DAY - dt.timedelta(days=1))
NIGHT_N = night(LAST_ORDER_DAY)
NEXT_NIGHT = night(LAST_ORDER_DAY + dt.timedelta(days=1))
# When every copy is taken (extract_source's as_of: rows dated after it are quarantined as impossible). Night N+1's
# orders are in the source before night N is loaded, so night N's load too must be taken after them, as a late rerun
# of night N would be; it then leaves them to night N+1 because they are dated after its interval.
COPIES_TAKEN_AT = NEXT_NIGHT[1] + dt.timedelta(hours=6)


def naive(moment: dt.datetime) -> dt.datetime:
    """The source stores naive UTC timestamps."""
    return moment.astimezone(dt.UTC).replace(tzinfo=None)


# --------------------------------------------------------------------------------------------- the next night's orders


@dataclass
class NightOrders:
    orders: int
    lines: int
    status_events: int
    late_cancellations: int


# Each new order copies the customer, shipping method and address of an existing order (a deterministic
# sample, md5 order), so every reference is valid; they are spread over the night's first 20 hours so that
# their second status (2 hours later) still falls inside the night.
NEW_ORDERS = """
insert into public.cust_order (order_id, order_date, customer_id, shipping_method_id, dest_address_id)
select %(max_order)s + n, %(start)s::timestamp + (n - 1) * %(spacing)s::interval,
       customer_id, shipping_method_id, dest_address_id
from (
    select row_number() over (order by md5(order_id::text)) as n, customer_id, shipping_method_id, dest_address_id
    from public.cust_order
) as model_orders
where n <= %(count)s
"""

# 1-3 lines per order (by order_id), each the book and price of an existing line (again an md5 sample).
NEW_LINES = """
insert into public.order_line (line_id, order_id, book_id, price)
select %(max_line)s + row_number() over (order by o.order_id, l.k), o.order_id, sample.book_id, sample.price
from public.cust_order as o
cross join lateral generate_series(1, 1 + o.order_id %% 3) as l (k)
join (
    select row_number() over (order by md5(line_id::text)) as n, book_id, price from public.order_line
) as sample on sample.n = (o.order_id - %(max_order)s) * 3 + l.k
where o.order_id > %(max_order)s
"""

# Order Received 5 minutes after each new order, Pending Delivery 2 hours after every other one; and a late
# Cancelled, spread over the night, for old orders that were neither delivered, cancelled nor returned.
NEW_STATUS_EVENTS = """
with events as (
    select order_id, 1 as status_id, order_date + interval '5 minutes' as status_date
    from public.cust_order where order_id > %(max_order)s
    union all
    select order_id, 2, order_date + interval '2 hours'
    from public.cust_order where order_id > %(max_order)s and order_id %% 2 = 0
    union all
    select order_id, %(cancelled)s, %(start)s::timestamp + interval '1 hour' + (n - 1) * %(late_spacing)s::interval
    from (
        select row_number() over (order by md5('late' || o.order_id)) as n, o.order_id
        from public.cust_order as o
        where o.order_id <= %(max_order)s
          and not exists (
              select 1 from public.order_history as h where h.order_id = o.order_id and h.status_id in (4, 5, 6)
          )
    ) as open_orders
    where n <= %(late_count)s
)
insert into public.order_history (history_id, order_id, status_id, status_date)
select %(max_history)s + row_number() over (order by status_date, order_id), order_id, status_id, status_date
from events
"""


def add_next_night_orders(source_uri: str) -> NightOrders:
    """Adds night N+1's orders to the source, once: a rerun finds them there and only counts them."""
    start, end = (naive(moment) for moment in NEXT_NIGHT)
    with psycopg.connect(source_uri) as conn:
        already = conn.execute("select count(*) from public.cust_order where order_date >= %s", (start,)).fetchone()[0]
        if not already:
            _insert_next_night(conn, start)
        orders = conn.execute(
            "select count(*) from public.cust_order where order_date >= %s and order_date < %s", (start, end)
        ).fetchone()[0]
        lines = conn.execute(
            "select count(*) from public.order_line join public.cust_order using (order_id) where order_date >= %s",
            (start,),
        ).fetchone()[0]
        events, late = conn.execute(
            "select count(*), count(*) filter (where o.order_date < %(start)s) from public.order_history as h "
            "join public.cust_order as o using (order_id) where h.status_date >= %(start)s",
            {"start": start},
        ).fetchone()
    if not already:
        with psycopg.connect(source_uri, autocommit=True) as conn:
            conn.execute("analyze public.cust_order, public.order_line, public.order_history")
    log(
        f"night {NEXT_NIGHT[0]:%Y-%m-%d}: {orders:,} new orders, {lines:,} lines, {events - late:,} status events, "
        f"{late:,} late cancellations of old orders ({'added' if not already else 'already in the source'})"
    )
    return NightOrders(orders=orders, lines=lines, status_events=events - late, late_cancellations=late)


def _insert_next_night(conn: psycopg.Connection, start: dt.datetime) -> None:
    old_orders, max_order, max_line, max_history = conn.execute(
        "select (select count(*) from public.cust_order), (select max(order_id) from public.cust_order),"
        " (select max(line_id) from public.order_line), (select max(history_id) from public.order_history)"
    ).fetchone()
    count = round(old_orders * NEW_ORDER_SHARE)
    late_count = max(1, round(old_orders * LATE_CANCELLATION_SHARE))
    params = {
        "start": start,
        "count": count,
        "spacing": dt.timedelta(hours=20) / count,
        "late_count": late_count,
        "late_spacing": dt.timedelta(hours=20) / late_count,
        "cancelled": CANCELLED,
        "max_order": max_order,
        "max_line": max_line,
        "max_history": max_history,
    }
    for statement in (NEW_ORDERS, NEW_LINES, NEW_STATUS_EVENTS):
        conn.execute(statement, params)


# --------------------------------------------------------------------------------------------- one night's load


@dataclass
class Extraction:
    seconds: float
    rows: dict[str, int]  # rows copied per table
    copy_window_seconds: float  # first table's start -> last table's commit
    validation_seconds: float  # last table's commit -> last validation record
    rows_rejected: int  # quarantined by validation: 0 on the generated source, else the night is not a normal one


@dataclass
class DbtNode:
    unique_id: str
    group: str
    seconds: float


@dataclass
class DbtBuild:
    seconds: float  # wall time of the plan and the dbt process
    dbt_elapsed_seconds: float  # dbt's own elapsed time (run_results.json): without start-up and parsing
    nodes: list[DbtNode]
    plan: dict[str, int]  # models, snapshots and seeds rebuilt / left up to date (build_state.py)

    def group_seconds(self) -> dict[str, float]:
        sums: dict[str, float] = {}
        for node in self.nodes:
            sums[node.group] = sums.get(node.group, 0.0) + node.seconds
        return sums

    @property
    def fact_seconds(self) -> float:
        return sum(n.seconds for n in self.nodes if n.group == FACTS)


@dataclass
class NightlyLoad:
    extraction: Extraction
    dbt: DbtBuild
    orders_rebuilt: int  # orders whose facts this load (re)built

    @property
    def total_seconds(self) -> float:
        return self.extraction.seconds + self.dbt.seconds


def extract_night(
    run_id: str, source_uri: str, warehouse_uri: str, interval: Interval, full_refresh: bool
) -> Extraction:
    os.environ["AIRFLOW_CONN_PACBOOK_SOURCE"] = source_uri
    os.environ["AIRFLOW_CONN_PACBOOK_WAREHOUSE"] = warehouse_uri
    started = time.perf_counter()
    rows = extract_source(run_id, interval=interval, as_of=COPIES_TAKEN_AT, full_refresh=full_refresh)
    seconds = time.perf_counter() - started
    with psycopg.connect(warehouse_uri) as conn:
        window, validation, rejected = conn.execute(
            "with checks as (select max(validated_at) as done, sum(rows_rejected) as rejected"
            " from audit.staging_validation where run_id = %(run)s)"
            " select extract(epoch from max(l.finished_at) - min(l.started_at)),"
            " extract(epoch from (select done from checks) - max(l.finished_at)), (select rejected from checks)"
            " from audit.extract_load as l where l.run_id = %(run)s",
            {"run": run_id},
        ).fetchone()
    if rejected:
        log(f"{run_id}: validation quarantined {rejected} rows; this is not the normal night the benchmark assumes")
    return Extraction(seconds, rows, float(window), float(validation or 0), int(rejected or 0))


def dbt_in_a_new_process(command: list[str], env: dict[str, str]) -> tuple[int, str]:
    """dbt as its CLI runs (dbt_cli.run_dbt): a new interpreter that imports dbt (~2.3 s) and runs it."""
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    return done.returncode, done.stdout + done.stderr


def dbt_forked_from_a_preloaded_process(command: list[str], env: dict[str, str]) -> tuple[int, str]:
    """dbt started the way the DAG's task processes start it: dbt's own runner (dbtRunner, which Cosmos'
    dbt-runner mode calls in the task's process) in a process forked from one that imported dbt beforehand,
    as the scheduler's forkserver preloads it (airflow_stack.TASK_PRELOAD_MODULES). Timed from the fork.
    One build of the night's selection, as build_changed runs it (the DAG runs one task per node instead).
    dbt's output, and the error of a run that raised, go to a file in the target folder."""
    output = Path(command[command.index("--target-path") + 1]) / "bench-dbt-output.log"
    sys.stdout.flush()
    sys.stderr.flush()
    child = os.fork()
    if child == 0:  # pragma: no cover - the child
        code = 1
        try:
            with open(output, "w") as out:
                os.dup2(out.fileno(), 1)
                os.dup2(out.fileno(), 2)
            os.environ.clear()
            os.environ.update(env)
            from dbt.cli.main import dbtRunner

            result = dbtRunner().invoke(command[1:])
            if result.exception is not None:
                print(f"dbt raised: {result.exception!r}", file=sys.stderr)
            code = 0 if result.success else 1
        except BaseException:  # noqa: BLE001 - the child's output file is its only report
            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    try:
        _, status = os.waitpid(child, 0)
    except BaseException:  # interrupted: the build must not go on against a server about to stop
        os.kill(child, signal.SIGTERM)
        os.waitpid(child, 0)
        raise
    return os.waitstatus_to_exitcode(status), output.read_text(errors="replace") if output.exists() else ""


# How the benchmark starts dbt (--dbt-invocation); see the two functions above.
DBT_INVOCATIONS = {"preloaded": dbt_forked_from_a_preloaded_process, "subprocess": dbt_in_a_new_process}


@dataclass(frozen=True)
class DbtOptions:
    invocation: str = "preloaded"  # a key of DBT_INVOCATIONS
    args: tuple[str, ...] = ()  # added to every build (--dbt-exclude)


def build_warehouse(
    warehouse_uri: str,
    interval: Interval,
    dbt: DbtOptions,
    *extra: str,
    keep_target: Path | None = None,
    run_id: str = "bench",
) -> DbtBuild:
    """`dbt build` as the nightly run does it (dbt_cli.build_changed: the nodes whose inputs or code
    changed since their last build, their tests with them; everything with ``--full-refresh``; the
    warehouse's own target folder, so dbt parses only what changed; the night's time in the
    environment), reading run_results.json and the manifest to tell where the time went. With
    ``keep_target`` (an empty or new folder) dbt writes there instead, a full parse, and the folder
    stays, compiled SQL and all. The plan (reading the warehouse's build state) is timed too."""
    snapshot_at = naive(interval[1]).strftime("%Y-%m-%d %H:%M:%S")
    env = dbt_env(warehouse_uri) | {config.SNAPSHOT_AT_VARIABLE: snapshot_at}
    started = time.perf_counter()
    started_at = warehouse_clock(warehouse_uri)
    selection, counts = changed_selection(warehouse_uri, full_refresh="--full-refresh" in extra)
    if selection is None:
        return DbtBuild(time.perf_counter() - started, 0.0, [], counts)
    extra = (*(arg for arg in extra if arg != "--full-refresh"), *dbt.args)
    with contextlib.ExitStack() as stack:
        target = keep_target or stack.enter_context(dbt_target(warehouse_uri))
        returncode, output = DBT_INVOCATIONS[dbt.invocation](
            dbt_command("build", *selection, *extra, target=target), env
        )
        if returncode:
            raise RuntimeError(f"dbt build {' '.join(extra)} failed:\n{output[-6000:]}")
        record_builds(warehouse_uri, target, run_id, started_at)
        seconds = time.perf_counter() - started
        results = json.loads((target / "run_results.json").read_text())
        manifest = json.loads((target / "manifest.json").read_text())
    nodes = [
        DbtNode(r["unique_id"], node_group(manifest, r["unique_id"]), float(r["execution_time"]))
        for r in results["results"]
    ]
    return DbtBuild(seconds, float(results["elapsed_time"]), nodes, counts)


def node_group(manifest: dict, unique_id: str) -> str:
    """What a dbt node is, in the words of the warehouse's layers."""
    node = manifest["nodes"].get(unique_id, {})
    kind = unique_id.split(".")[0]
    if kind == "model":
        name, layer = node["name"], node["fqn"][1]
        if name in FACT_MODELS:
            return FACTS
        return {"dwh": "dims and other dwh tables", "marts": "marts"}.get(layer, "staging and intermediate views")
    if kind == "test":
        parents = node.get("depends_on", {}).get("nodes", [])
        on_facts = any(p.split(".")[-1] in FACT_MODELS for p in parents)
        return "tests on the facts" if on_facts else "other tests"
    return {"snapshot": "snapshots", "seed": "seeds", "unit_test": "unit tests"}.get(kind, kind)


def last_fact_build(warehouse_uri: str) -> dt.datetime | None:
    with psycopg.connect(warehouse_uri) as conn:
        return conn.execute("select max(loaded_at) from dwh.fct_order_fulfilment").fetchone()[0]


def orders_rebuilt_since(warehouse_uri: str, since: dt.datetime | None) -> int:
    with psycopg.connect(warehouse_uri) as conn:
        return conn.execute(
            "select count(*) from dwh.fct_order_fulfilment where loaded_at > %s",
            (since or dt.datetime.min.replace(tzinfo=dt.UTC),),
        ).fetchone()[0]


def checkpoint(srv: embedded_postgres.EmbeddedServer) -> None:
    """So that no timed step pays for flushing the writes of the step before it."""
    with psycopg.connect(srv.uri("postgres"), autocommit=True) as conn:
        conn.execute("checkpoint")


def full_rebuild(
    srv: embedded_postgres.EmbeddedServer, source_uri: str, rep: int, dbt: DbtOptions
) -> tuple[NightlyLoad, str]:
    """Night N+1 from scratch: every row extracted, every model rebuilt. Returns the load and its warehouse."""
    warehouse_uri = fresh_warehouse(srv)
    extraction = extract_night(f"bench-full-{rep}", source_uri, warehouse_uri, NEXT_NIGHT, full_refresh=True)
    checkpoint(srv)
    build = build_warehouse(warehouse_uri, NEXT_NIGHT, dbt, "--full-refresh")
    return NightlyLoad(extraction, build, orders_rebuilt_since(warehouse_uri, None)), warehouse_uri


def nightly_increment(
    srv: embedded_postgres.EmbeddedServer, source_uri: str, rep: int, dbt: DbtOptions
) -> tuple[NightlyLoad, str]:
    """Night N+1 on a warehouse that has loaded and built night N (prepared untimed, as the night before left it).
    Night N is itself an increment on night N-1's first load: the night after a first build (or a full
    refresh) tests every row of the incremental facts again, the nights after it only their recent rows
    (macros/rows_since_the_last_passed_build.sql), and a nightly run is one of those."""
    warehouse_uri = embedded_postgres.create_database(srv, NIGHTLY_WAREHOUSE_DB, drop_first=True)
    extract_night(f"bench-night-n-1-{rep}", source_uri, warehouse_uri, NIGHT_BEFORE_N, full_refresh=False)
    build_warehouse(warehouse_uri, NIGHT_BEFORE_N, dbt)
    extract_night(f"bench-night-n-{rep}", source_uri, warehouse_uri, NIGHT_N, full_refresh=False)
    build_warehouse(warehouse_uri, NIGHT_N, dbt)
    built_until = last_fact_build(warehouse_uri)
    checkpoint(srv)
    extraction = extract_night(f"bench-increment-{rep}", source_uri, warehouse_uri, NEXT_NIGHT, full_refresh=False)
    checkpoint(srv)
    build = build_warehouse(warehouse_uri, NEXT_NIGHT, dbt)
    return NightlyLoad(extraction, build, orders_rebuilt_since(warehouse_uri, built_until)), warehouse_uri


# Business columns only: surrogate keys and loaded_at legitimately differ between the two warehouses.
FACT_FINGERPRINTS = {
    "fct_sales": "order_id, line_id, book_id, sales_amount, net_sales_amount, shipping_cost_allocated, "
    "latest_order_status",
    "fct_order_fulfilment": "order_id, order_date, received_at, pending_at, delivered_at, cancelled_at, "
    "latest_order_status, status_event_count, order_amount, shipping_cost, sequence_issue",
    "fct_customer_monthly": "customer_id, month, orders, order_lines, revenue, net_revenue, cumulative_revenue, "
    "cumulative_net_revenue, cumulative_order_lines, months_since_last_order, has_ordered",
}


def fact_fingerprint(warehouse_uri: str) -> dict[str, tuple]:
    with psycopg.connect(warehouse_uri) as conn:
        return {
            table: conn.execute(
                f"select count(*), md5(string_agg(row({columns})::text, '|' order by {columns})) from dwh.{table}"
            ).fetchone()
            for table, columns in FACT_FINGERPRINTS.items()
        }


def check_same_facts(full_uri: str, increment_uri: str) -> None:
    full, increment = fact_fingerprint(full_uri), fact_fingerprint(increment_uri)
    if full != increment:
        raise RuntimeError(f"the increment's facts differ from the full rebuild's: {increment} vs {full}")


# --------------------------------------------------------------------------------------------- reporting


def figures(increments: list[NightlyLoad], fulls: list[NightlyLoad]) -> list[dict]:
    measures = {
        "extraction (extract_source)": lambda load: load.extraction.seconds,
        "dbt facts only (the three incremental facts)": lambda load: load.dbt.fact_seconds,
        "dbt build (whole project, with tests)": lambda load: load.dbt.seconds,
        "total (extraction + dbt build)": lambda load: load.total_seconds,
    }
    rows = []
    for name, measure in measures.items():
        increment = median([measure(load) for load in increments])
        full = median([measure(load) for load in fulls])
        ratio = increment / full
        rows.append(
            {
                "figure": name,
                "increment_s": round(increment, 2),
                "full_s": round(full, 2),
                "ratio": round(ratio, 3),
                "target": f"<= {TARGET_RATIO:.2f}",
                "holds": ratio <= TARGET_RATIO,
            }
        )
    return rows


def render_table(rows: list[dict]) -> str:
    header = ("figure", "increment s", "full s", "ratio", "target", "holds?")
    cells = [header] + [
        (
            r["figure"],
            f"{r['increment_s']:.2f}",
            f"{r['full_s']:.2f}",
            f"{r['ratio']:.2f}",
            r["target"],
            "yes" if r["holds"] else "NO",
        )
        for r in rows
    ]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = [" | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in cells]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(lines)


GROWING_TABLES = ("cust_order", "order_line", "order_history")


def where_the_time_goes(increments: list[NightlyLoad], fulls: list[NightlyLoad]) -> list[str]:
    """Medians of the parts of each load, increment beside full."""
    seen = {g for load in increments + fulls for g in load.dbt.group_seconds()}
    groups = [g for g in NODE_GROUPS if g in seen] + sorted(seen - set(NODE_GROUPS))
    parts = [
        ("extraction: rows copied", lambda x: sum(x.extraction.rows.values()), "rows"),
        ("  of which the growing tables", lambda x: sum(x.extraction.rows.get(t, 0) for t in GROWING_TABLES), "rows"),
        ("extraction: copy window (first start -> last commit)", lambda x: x.extraction.copy_window_seconds, "s"),
        ("extraction: validation (after the last commit)", lambda x: x.extraction.validation_seconds, "s"),
        ("extraction: rest (Luigi, completeness checks, schemas)", extraction_overhead, "s"),
        ("dbt: start-up + parse (wall - dbt's elapsed)", lambda x: x.dbt.seconds - x.dbt.dbt_elapsed_seconds, "s"),
        ("dbt: elapsed (dbt's own)", lambda x: x.dbt.dbt_elapsed_seconds, "s"),
        *((f"  {g}", lambda x, g=g: x.dbt.group_seconds().get(g, 0.0), "s") for g in groups),
        ("orders whose facts were (re)built", lambda x: x.orders_rebuilt, "rows"),
    ]
    lines = [f"  {'(median; dbt groups: sum of node seconds, 4 threads)':<56} {'increment':>10} {'full':>10}  ratio"]
    for name, measure, unit in parts:
        increment, full = median([measure(x) for x in increments]), median([measure(x) for x in fulls])
        shape = "{:>10,.0f}" if unit == "rows" else "{:>10.2f}"
        ratio = f"{increment / full:5.2f}" if full else "    -"
        lines.append(f"  {name:<56} {shape.format(increment)} {shape.format(full)}  {ratio}")
    return lines


def extraction_overhead(load: NightlyLoad) -> float:
    extraction = load.extraction
    return extraction.seconds - extraction.copy_window_seconds - extraction.validation_seconds


def raw_runs(increments: list[NightlyLoad], fulls: list[NightlyLoad]) -> list[str]:
    """Each repetition's pair, so the spread behind the medians shows."""

    def seconds(load: NightlyLoad) -> str:
        return f"{load.extraction.seconds:6.2f} + {load.dbt.seconds:6.2f} = {load.total_seconds:6.2f}"

    return [
        f"  run {rep}: increment {seconds(inc)}   full {seconds(full)}   "
        f"ratio {inc.total_seconds / full.total_seconds:.2f}   increment rebuilt {inc.dbt.plan['rebuilt']} nodes "
        f"({len(inc.dbt.nodes)} with tests), left {inc.dbt.plan['up_to_date']}"
        for rep, (inc, full) in enumerate(zip(increments, fulls, strict=True), start=1)
    ]


def slowest_nodes(loads: list[NightlyLoad], count: int = 8) -> list[str]:
    """The dbt nodes that take longest in the median run of these loads."""
    middle = sorted(loads, key=lambda load: load.dbt.seconds)[len(loads) // 2]
    nodes = sorted(middle.dbt.nodes, key=lambda n: n.seconds, reverse=True)[:count]
    return [f"  {n.seconds:7.2f} s  {n.unique_id.removeprefix('model.pacbook.')}  [{n.group}]" for n in nodes]


# --------------------------------------------------------------------------------------------- main


def quiet_pipeline_logs() -> None:
    """Airflow, imported for the PII key's secret masking, sends every INFO record to stdout, where the table goes:
    Luigi's and the pipeline's INFO lines would bury it. Their warnings still show."""
    quiet_luigi()
    with contextlib.suppress(ImportError):
        import airflow.sdk.log  # noqa: F401 - it sets up logging when imported, so the level is set after it
    logging.getLogger().setLevel(logging.WARNING)


def use_a_pii_key_of_this_run() -> None:
    """dbt's customer snapshot encrypts with the PII key; like the tests, this run makes up its own."""
    os.environ["AIRFLOW_CONN_PACBOOK_PII_KEY"] = json.dumps(
        {"conn_type": "generic", "password": secrets.token_urlsafe(32)}
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Time a nightly increment (1% new orders) against a full rebuild.")
    parser.add_argument("--scale", type=float, default=10.0, help="source scale (1 = the real shop; default 10)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per figure; the median is reported (default 3)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"embedded PostgreSQL port ({DEFAULT_PORT})")
    parser.add_argument(
        "--dbt-exclude",
        nargs="+",
        default=[],
        metavar="SELECTOR",
        help="dbt nodes left out of every build (e.g. a model that fails to compile); default: none",
    )
    parser.add_argument(
        "--dbt-invocation",
        choices=sorted(DBT_INVOCATIONS),
        default="preloaded",
        help="preloaded: dbt's runner in a process forked after dbt was imported, as the DAG's task processes start it "
        "(default); subprocess: a new dbt CLI process per build, as dbt_cli.run_dbt runs it",
    )
    args = parser.parse_args(argv)
    if args.dbt_invocation == "preloaded":
        import dbt.adapters.postgres  # noqa: F401 - what the forkserver preloads, before any timing
        import dbt.cli.main  # noqa: F401
    dbt = DbtOptions(args.dbt_invocation, ("--exclude", *args.dbt_exclude) if args.dbt_exclude else ())

    quiet_pipeline_logs()
    use_a_pii_key_of_this_run()
    bench_dir = config.state_dir() / "bench"
    bench_dir.mkdir(parents=True, exist_ok=True)
    srv = embedded_postgres.server(root=bench_dir / "postgres-increment", port=args.port)
    started_at = dt.datetime.now(dt.UTC)
    load_before = os.getloadavg()
    log(f"embedded PostgreSQL on 127.0.0.1:{args.port} ({srv.root})")
    embedded_postgres.start(srv)
    increments: list[NightlyLoad] = []
    fulls: list[NightlyLoad] = []
    try:
        source_uri = ensure_source(srv, args.scale, args.seed)
        night_orders = add_next_night_orders(source_uri)
        for rep in range(1, args.repeat + 1):
            # Alternating which goes first keeps a trend in the machine's load from favouring either.
            order = (full_rebuild, nightly_increment) if rep % 2 else (nightly_increment, full_rebuild)
            warehouses = {}
            for run in order:
                load, warehouse_uri = run(srv, source_uri, rep, dbt)
                (fulls if run is full_rebuild else increments).append(load)
                warehouses[run.__name__] = warehouse_uri
                log(
                    f"run {rep}: {run.__name__:<17} extraction {load.extraction.seconds:6.2f} s, "
                    f"dbt build {load.dbt.seconds:6.2f} s (facts {load.dbt.fact_seconds:5.2f} s), "
                    f"{load.orders_rebuilt:,} orders built"
                )
            check_same_facts(warehouses["full_rebuild"], warehouses["nightly_increment"])
    finally:
        embedded_postgres.stop(srv)
        log("embedded PostgreSQL stopped")

    rows = figures(increments, fulls)
    print(
        f"\nNightly increment vs full rebuild, scale {args.scale:g}, night {NEXT_NIGHT[0]:%Y-%m-%d} "
        f"({night_orders.orders:,} new orders = {NEW_ORDER_SHARE:.0%}, {night_orders.late_cancellations} late "
        f"cancellations), median of {args.repeat}"
    )
    print(render_table(rows))
    print("\nraw runs (seconds: extraction + dbt build = total):")
    print("\n".join(raw_runs(increments, fulls)))
    print("\nwhere the time goes:")
    print("\n".join(where_the_time_goes(increments, fulls)))
    print("\nslowest dbt nodes, increment (median run):")
    print("\n".join(slowest_nodes(increments)))
    print("\nslowest dbt nodes, full rebuild (median run):")
    print("\n".join(slowest_nodes(fulls)))
    load_after = os.getloadavg()
    print(f"\n  load average (1 min) before/after: {load_before[0]:.2f} / {load_after[0]:.2f} on {os.cpu_count()} CPUs")
    print("  the increment's order facts equal the full rebuild's in every run")

    result = {
        "benchmark": "increment",
        "started_at": started_at.isoformat(timespec="seconds"),
        "command": " ".join(["python -m bench.increment", *(argv if argv is not None else sys.argv[1:])]),
        "scale": args.scale,
        "seed": args.seed,
        "repeat": args.repeat,
        "dbt_invocation": args.dbt_invocation,
        "night_n": NIGHT_N[0].date().isoformat(),
        "next_night": NEXT_NIGHT[0].date().isoformat(),
        "next_night_orders": asdict(night_orders),
        "figures": rows,
        "increment_runs": [_load_as_dict(load) for load in increments],
        "full_runs": [_load_as_dict(load) for load in fulls],
    }
    write_results(bench_dir / f"increment-{scale_tag(args.scale)}.json", result, load_before, load_after)
    return 0


def _load_as_dict(load: NightlyLoad) -> dict:
    return {
        "extraction": asdict(load.extraction),
        "dbt_seconds": round(load.dbt.seconds, 3),
        "dbt_elapsed_seconds": round(load.dbt.dbt_elapsed_seconds, 3),
        "dbt_fact_seconds": round(load.dbt.fact_seconds, 3),
        "dbt_group_seconds": {g: round(s, 3) for g, s in load.dbt.group_seconds().items()},
        "dbt_nodes_run": len(load.dbt.nodes),
        "dbt_plan": load.dbt.plan,
        "orders_rebuilt": load.orders_rebuilt,
        "total_seconds": round(load.total_seconds, 3),
    }


if __name__ == "__main__":
    raise SystemExit(main())
