"""State-aware dbt builds: which models, snapshots and seeds a nightly build rebuilds, and which it leaves.

A node (model, snapshot or seed) is rebuilt, its tests with it, when

* the run is a full refresh;
* it was never built, its relation is missing, or its fingerprint changed since its last build: its SQL
  and configuration, the project's macros or the dbt version (a deploy; an incremental model is then
  rebuilt from scratch, as its old rows were built by the old code);
* a staging table it reads changed after its last build (``audit.staging_change``, kept by triggers
  on every staging table, whoever wrote it);
* a node it reads is rebuilt in this run, or was built after it (a run that failed half-way).

Otherwise the same SQL over the same rows would write the same rows and its tests would say what they
said: the node is up to date and its build is skipped (the task succeeds without running dbt). A night
with only new orders rebuilds the order
facts, the marts over them and their tests, and leaves the book, author, publisher and shipping
dimensions as they are. ``audit.dbt_node_build`` holds each node's last successful build (node and
tests passed), written after the build by the Cosmos task (``record_cosmos_build``) or the dbt CLI
(``record_builds``). docs/warehouse.md#state-aware-builds has the rules and their limits.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from include.pacbook import config

log = logging.getLogger("pacbook.build_state")

BUILT_KINDS = ("model", "snapshot", "seed")
PASSED = ("success", "pass", "warn")


@dataclass(frozen=True)
class Node:
    unique_id: str
    name: str
    fingerprint: str
    relation: tuple[str, str]  # (schema, table or view)
    parents: tuple[str, ...]  # the models, snapshots and seeds it reads
    staging_tables: tuple[str, ...]  # the staging tables it reads (dbt sources)
    source_selectors: tuple[str, ...] = ()  # the same as dbt selectors: source:<source>.<table>
    incremental: bool = False  # an incremental model keeps rows built by the code of earlier builds


@dataclass(frozen=True)
class Build:
    fingerprint: str
    built_at: dt.datetime


@dataclass(frozen=True)
class Decision:
    rebuild: bool
    reason: str
    changed_tables: tuple[str, ...] = ()  # the staging tables that made it stale
    full_refresh: bool = False  # rebuilt from scratch: an incremental model whose code changed


@dataclass(frozen=True)
class WarehouseState:
    builds: Mapping[str, Build]
    changes: Mapping[str, dt.datetime]  # staging table -> last change
    relations: frozenset[tuple[str, str]]  # the nodes' relations that exist
    now: dt.datetime  # the warehouse's clock when the state was read: a build starting now is dated so


def project_nodes(manifest: Mapping) -> dict[str, Node]:
    """The project's buildable nodes from a dbt manifest, in an order where parents come first."""
    macros = sorted(
        (uid, macro["macro_sql"])
        for uid, macro in manifest["macros"].items()
        if macro["package_name"] == config.DBT_PROJECT_NAME
    )
    shared = json.dumps({"macros": macros, "dbt": manifest["metadata"]["dbt_version"]})
    sources = {uid: source["identifier"] for uid, source in manifest["sources"].items()}
    selectors = {s["identifier"]: f"source:{s['source_name']}.{s['name']}" for s in manifest["sources"].values()}
    nodes: dict[str, Node] = {}
    for uid, node in manifest["nodes"].items():
        if node["resource_type"] not in BUILT_KINDS:
            continue
        code = {key: value for key, value in node["config"].items() if key != "database"}
        # An enforced contract's columns, types and constraints are created with the table: an
        # incremental model must be rebuilt when they change, or its table keeps the old ones.
        contract = node.get("contract") or {}
        table_shape = (
            [contract.get("checksum"), {name: column.get("constraints") for name, column in node["columns"].items()}]
            if contract.get("enforced")
            else []
        )
        digest = hashlib.sha256(
            json.dumps([node["checksum"]["checksum"], code, shared, *table_shape], sort_keys=True, default=str).encode()
        ).hexdigest()
        depends_on = node.get("depends_on", {}).get("nodes", [])
        nodes[uid] = Node(
            unique_id=uid,
            name=node["name"],
            fingerprint=digest,
            relation=(node["schema"], node["alias"] or node["name"]),
            parents=tuple(p for p in depends_on if p.split(".")[0] in BUILT_KINDS),
            staging_tables=(tables := tuple(sorted({sources[p] for p in depends_on if p in sources}))),
            source_selectors=tuple(selectors[t] for t in tables),
            incremental=node["config"].get("materialized") == "incremental",
        )
    return {uid: nodes[uid] for uid in _parents_first(nodes)}


def _parents_first(nodes: Mapping[str, Node]) -> list[str]:
    ordered: list[str] = []
    seen: set[str] = set()

    def visit(uid: str) -> None:
        if uid in seen or uid not in nodes:
            return
        seen.add(uid)
        for parent in nodes[uid].parents:
            visit(parent)
        ordered.append(uid)

    for uid in sorted(nodes):
        visit(uid)
    return ordered


@functools.cache
def _manifest_nodes(path: str, modified_ns: int) -> dict[str, Node]:
    return project_nodes(json.loads(Path(path).read_text()))


def manifest_nodes(path: Path = config.DBT_MANIFEST_PATH) -> dict[str, Node]:
    """The nodes of the manifest Cosmos renders the DAG from (``make manifest``), read once per version."""
    return _manifest_nodes(str(path), path.stat().st_mtime_ns)


def read_state(conn, nodes: Iterable[Node]) -> WarehouseState:
    relations = sorted({node.relation for node in nodes})
    builds: dict[str, Build] = {}
    changes: dict[str, dt.datetime] = {}
    if conn.execute("select to_regclass('audit.dbt_node_build') is not null").fetchone()[0]:
        recorded = conn.execute("select unique_id, fingerprint, built_at from audit.dbt_node_build").fetchall()
        builds = {uid: Build(fingerprint, built_at) for uid, fingerprint, built_at in recorded}
        changes = dict(conn.execute("select table_name, changed_at from audit.staging_change").fetchall())
    existing = conn.execute(
        "select schemaname, tablename from pg_tables where (schemaname, tablename) in "
        "(select * from unnest(%(schemas)s::text[], %(names)s::text[])) "
        "union select schemaname, viewname from pg_views where (schemaname, viewname) in "
        "(select * from unnest(%(schemas)s::text[], %(names)s::text[]))",
        {"schemas": [r[0] for r in relations], "names": [r[1] for r in relations]},
    ).fetchall()
    now = conn.execute("select clock_timestamp()").fetchone()[0]
    return WarehouseState(builds, changes, frozenset(map(tuple, existing)), now)


def _at(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def decide(
    node: Node, state: WarehouseState, full_refresh: bool = False, planned: Mapping[str, Decision] | None = None
) -> Decision:
    """Whether ``node`` is rebuilt, and why; ``planned`` holds the decisions already taken for this run."""
    if full_refresh:
        return Decision(True, "full refresh")
    build = state.builds.get(node.unique_id)
    if build is None:
        return Decision(True, "no successful build recorded")
    if build.fingerprint != node.fingerprint:
        if node.incremental:
            # Its rows were built by the old code: an incremental build would only redo the new ones.
            return Decision(
                True,
                "its code, configuration or macros changed since its last build: every row is rebuilt",
                full_refresh=True,
            )
        return Decision(True, "its code, configuration or macros changed since its last build")
    if node.relation not in state.relations:
        return Decision(True, f"{'.'.join(node.relation)} does not exist")
    late = [t for t in node.staging_tables if t not in state.changes or state.changes[t] > build.built_at]
    if late:
        changed = ", ".join(
            f"staging.{t} at {_at(state.changes[t])}" if t in state.changes else f"staging.{t} (untracked)"
            for t in late
        )
        return Decision(True, f"changed since its last build at {_at(build.built_at)}: {changed}", tuple(late))
    for parent in node.parents:
        if planned is not None and parent in planned and planned[parent].rebuild:
            return Decision(True, f"{parent.split('.')[-1]} is rebuilt before it")
        parent_build = state.builds.get(parent)
        if parent_build is None or parent_build.built_at > build.built_at:
            when = f"at {_at(parent_build.built_at)}" if parent_build else "(no build recorded)"
            return Decision(
                True, f"{parent.split('.')[-1]} was rebuilt {when}, after its last build at {_at(build.built_at)}"
            )
    return Decision(False, f"up to date: built at {_at(build.built_at)}, none of its inputs changed since")


def plan(nodes: Mapping[str, Node], state: WarehouseState, full_refresh: bool = False) -> dict[str, Decision]:
    """Every node's decision for a build of the whole project (``nodes`` in parents-first order)."""
    decisions: dict[str, Decision] = {}
    for uid, node in nodes.items():
        decisions[uid] = decide(node, state, full_refresh, decisions)
    return decisions


def record_builds(
    conn, nodes: Mapping[str, Node], run_results: Mapping, manifest: Mapping, run_id: str, started_at: dt.datetime
) -> list[str]:
    """Records the nodes a dbt CLI run built whose tests all passed; returns their ids."""
    results = {r["unique_id"]: r["status"] for r in run_results["results"]}
    failed_tests = {uid for uid, status in results.items() if uid.startswith("test.") and status not in PASSED}
    tested = {
        parent
        for uid in failed_tests
        for parent in manifest["nodes"].get(uid, {}).get("depends_on", {}).get("nodes", [])
    }
    built = [uid for uid, status in results.items() if uid in nodes and status in PASSED and uid not in tested]
    _upsert(conn, [(uid, nodes[uid].fingerprint) for uid in built], run_id, started_at)
    return built


def _upsert(conn, fingerprints: list[tuple[str, str]], run_id: str, started_at: dt.datetime) -> None:
    with conn.cursor() as cursor:
        cursor.executemany(
            "select audit.record_dbt_build(%s, %s, %s, %s)",
            [(uid, fingerprint, started_at, run_id) for uid, fingerprint in fingerprints],
        )


# ------------------------------------------------------------------------------------------ the Cosmos tasks

STARTED_AT_KEY = "pacbook_build_started_at"


def _cosmos_node(context) -> str | None:
    extra = getattr(context["task"], "extra_context", None) or {}
    return (extra.get("dbt_node_config") or {}).get("unique_id")


def skip_cosmos_build_when_up_to_date(context) -> None:
    """Before a Cosmos dbt task (``pre_execute``): when its node is up to date, the task does not run dbt
    and ends successfully, so the nodes after it run as usual (as Cosmos does for an unchanged seed: a
    skipped task would skip everything downstream); otherwise logs why the node is rebuilt."""
    from include.pacbook.session_roles import TRANSFORMING, warehouse_uri_for
    from include.pacbook.warehouse import connect

    task = context["task"]
    uid = _cosmos_node(context)
    nodes = manifest_nodes()
    if uid not in nodes:
        return  # a test or a node the manifest does not know: built as Cosmos renders it
    node = nodes[uid]
    with connect(warehouse_uri_for(TRANSFORMING)) as conn:
        state = read_state(conn, [node])
    decision = decide(node, state, full_refresh=bool(context["params"].get("full_refresh")))
    if decision.rebuild:
        log.info("%s is rebuilt: %s", node.name, decision.reason)
        if decision.full_refresh:
            task.full_refresh = True
        context[STARTED_AT_KEY] = state.now
        return
    message = f"{node.name} is {decision.reason}: not rebuilt (RUNBOOK.md#up-to-date-dbt-tasks)"

    def not_rebuilt(*args, **kwargs) -> None:
        log.info("%s", message)

    # The operator's execute() runs dbt through this method; the instance exists for this try only.
    task.build_and_run_cmd = not_rebuilt


def record_cosmos_build(context, result=None) -> None:
    """After a Cosmos dbt task succeeded (``post_execute``): its node and tests passed, so the node is
    recorded as built when the task started."""
    from include.pacbook.session_roles import TRANSFORMING, warehouse_uri_for
    from include.pacbook.warehouse import connect

    uid = _cosmos_node(context)
    started_at = context.get(STARTED_AT_KEY)
    nodes = manifest_nodes()
    if uid not in nodes or started_at is None:
        return
    with connect(warehouse_uri_for(TRANSFORMING)) as conn:
        _upsert(conn, [(uid, nodes[uid].fingerprint)], context["run_id"], started_at)
