"""The dbt project rendered by Cosmos: all Cosmos configuration lives here, next to nothing else.

One Airflow task per dbt node (model, snapshot), each running ``dbt build`` on its node so the
node's tests run right after it; one task group per warehouse layer. The project is loaded from the
manifest that ``make`` builds with ``dbt parse``, so parsing the DAG needs neither dbt nor a database.

How Cosmos runs the tasks is ``config.cosmos_execution_mode()`` (``PACBOOK_COSMOS_EXECUTION_MODE``):
dbt in the task's own process (the default), a dbt process per task, or the watcher mode (one
``dbt build`` per layer whose progress one task per node reports). ``bench/transform.py`` compares them.
"""

from __future__ import annotations

import functools
from pathlib import Path

from cosmos import (
    DbtTaskGroup,
    ExecutionConfig,
    ProfileConfig,
    ProjectConfig,
    RenderConfig,
)
from cosmos.constants import (
    DbtResourceType,
    ExecutionMode,
    InvocationMode,
    LoadMode,
    TestBehavior,
    TestIndirectSelection,
)
from cosmos.dbt.graph import DbtNode
from cosmos.operators.local import DbtTestLocalOperator
from cosmos.profiles import PostgresUserPasswordProfileMapping

from include.pacbook import build_state, config

# Layers, in the order data flows; each selects the dbt folders whose tables land in that schema.
LAYERS = {
    "staging": ["path:models/staging"],
    "dwh": ["path:models/intermediate", "path:snapshots", "path:seeds", "path:models/dwh"],
    "marts": ["path:models/marts"],
}

# The snapshot stamps new customer versions with the end of the run's data interval (not the wall
# clock), so a backfilled night dates its changes to that night. A manual run without a logical
# date has no interval (Airflow 3) and uses the time it was asked to run. It is given in the
# environment, not as a dbt var: a var that changes every night would make each task parse the
# whole project again (macros/snapshot_get_time.sql).
DBT_ENV = {
    **config.DBT_PRODUCTION_ENV,
    config.SNAPSHOT_AT_VARIABLE: "{{ (dag_run.data_interval_end or dag_run.run_after).strftime('%Y-%m-%d %H:%M:%S') }}",
}


# (execution mode, invocation mode) per value of PACBOOK_COSMOS_EXECUTION_MODE.
EXECUTION_MODES = {
    "local-runner": (ExecutionMode.LOCAL, InvocationMode.DBT_RUNNER),
    "local-subprocess": (ExecutionMode.LOCAL, InvocationMode.SUBPROCESS),
    "watcher": (ExecutionMode.WATCHER, InvocationMode.DBT_RUNNER),
}


# Cosmos gives the node tasks the indirect selection of ExecutionConfig, not the watcher's producer: its
# `dbt build` of a layer would otherwise run a relationships test with the first of its models' layers.
WATCHER_PRODUCER_ARGS = {"indirect_selection": TestIndirectSelection.BUILDABLE.value}


# State-aware builds (build_state.py): a node task whose inputs did not change since its last build
# succeeds without running dbt; a rebuilt node is recorded once its tests passed. The LOCAL modes only:
# the watcher's producer builds a whole layer in one `dbt build`.
STATE_AWARE_ARGS = {
    "pre_execute": build_state.skip_cosmos_build_when_up_to_date,
    "post_execute": build_state.record_cosmos_build,
}


@functools.cache
def _project() -> ProjectConfig:
    """One project for the three groups, its manifest read as a plain local file.

    Cosmos turns ``manifest_path`` into an ``ObjectStoragePath``, whose reads are reported as
    lineage: the first one loads every Airflow plugin (~0.2 s of each DAG parse). The manifest is
    a build artefact next to the DAG, not a data asset, so it is read as the ``Path`` it is.
    """
    project = ProjectConfig(
        dbt_project_path=config.DBT_PROJECT_DIR,
        manifest_path=config.DBT_MANIFEST_PATH,
        project_name=config.DBT_PROJECT_NAME,
        install_dbt_deps=False,
    )
    project.manifest_path = Path(config.DBT_MANIFEST_PATH)
    return project


class WarehouseProfileWithPiiKey(PostgresUserPasswordProfileMapping):
    """Cosmos' Postgres profile from the warehouse connection, plus the PII key in dbt's environment.

    Cosmos asks a mapping for its environment only when a task runs (never when the DAG is parsed),
    and passes it to dbt beside the rendered profile, not in it: the key (PGOPTIONS, read by libpq)
    is in no profile, template field, serialized DAG or dbt artefact (docs/security.md#the-key).
    """

    @property
    def env_vars(self) -> dict[str, str]:
        # psycopg: not needed to parse the DAG
        from include.pacbook.privileges import dbt_session_env
        from include.pacbook.session_roles import TRANSFORMING, warehouse_uri_for

        options = config.connection_options(warehouse_uri_for(TRANSFORMING))  # dbt works as the transformer
        return {**super().env_vars, **dbt_session_env(config.pii_encryption_key(), options)}


def dbt_profile() -> ProfileConfig:
    return ProfileConfig(
        profile_name=config.DBT_PROJECT_NAME,
        target_name="airflow",
        profile_mapping=WarehouseProfileWithPiiKey(
            conn_id=config.WAREHOUSE_CONN_ID,
            profile_args={"schema": "dwh", "threads": 2},
        ),
    )


def dbt_layer(layer: str) -> DbtTaskGroup:
    """The task group that builds one warehouse layer (staging, dwh or marts), ending with the task
    that runs the layer's tests no node task runs (``layer_tests``), when it has any."""
    execution_mode, invocation_mode = EXECUTION_MODES[config.cosmos_execution_mode()]
    group = DbtTaskGroup(
        group_id=layer,
        project_config=_project(),
        profile_config=dbt_profile(),
        execution_config=ExecutionConfig(
            execution_mode=execution_mode,
            invocation_mode=invocation_mode,
            # Cosmos looks for `dbt` on PATH, which the components' environment need not have.
            dbt_executable_path=config.dbt_executable(),
            # A test runs with the last of the models it reads: `eager` would run a relationships
            # test with its first parent, before the other one exists.
            test_indirect_selection=TestIndirectSelection.BUILDABLE,
        ),
        render_config=RenderConfig(
            load_method=LoadMode.DBT_MANIFEST,
            select=LAYERS[layer],
            # The watcher's producer runs one `dbt build` of the layer, tests right after their model;
            # its per-node tasks only report, and it has no per-node build task (Cosmos 1.15 raises on
            # BUILD), so there a model's tests show as a task of their own after the model's.
            test_behavior=TestBehavior.AFTER_EACH if execution_mode == ExecutionMode.WATCHER else TestBehavior.BUILD,
        ),
        # `full_refresh` is the DAG's trigger parameter: rebuild incremental models from scratch.
        operator_args={
            "install_deps": False,
            "env": DBT_ENV,
            "full_refresh": "{{ params.full_refresh }}",
            **(WATCHER_PRODUCER_ARGS if execution_mode == ExecutionMode.WATCHER else STATE_AWARE_ARGS),
        },
    )
    # The watcher's producer builds the whole layer in one `dbt build`, which runs these tests itself.
    tests = [] if execution_mode == ExecutionMode.WATCHER else tests_no_node_task_runs(group.dbt_graph.nodes, layer)
    if tests:
        node_tasks = list(group.get_leaves())
        with group:
            layer_tests = DbtTestLocalOperator(
                task_id="layer_tests",
                doc_md=LAYER_TESTS_DOC,
                project_dir=config.DBT_PROJECT_DIR,
                profile_config=dbt_profile(),
                manifest_filepath=config.DBT_MANIFEST_PATH,
                dbt_executable_path=config.dbt_executable(),
                invocation_mode=invocation_mode,
                install_deps=False,
                env=DBT_ENV,
                select=tests,
                # the node tasks' cache: their saved parse spares this task a full parse (~3 s)
                cache_dir=node_tasks[0].cache_dir,
            )
        node_tasks >> layer_tests
    return group


LAYER_TESTS_DOC = """The layer's data tests that no model's task can run, run once all its models are built:
the tests on its sources (no source is a task) and the tests that read two models neither of which
is upstream of the other (a relationships test between two staging models). Failing: RUNBOOK.md#dbt-test-failed."""


def _layer_of(node: DbtNode) -> int | None:
    """The index in LAYERS of the layer whose folders hold the node (a source: its YAML file's folder)."""
    path = node.original_file_path.as_posix()
    for index, selectors in enumerate(LAYERS.values()):
        if any(path.startswith(selector.removeprefix("path:") + "/") for selector in selectors):
            return index
    return None


def tests_no_node_task_runs(nodes: dict[str, DbtNode], layer: str) -> list[str]:
    """The names of the data tests that no node task runs, and that belong to ``layer``.

    A node task runs `dbt build --select <node> --indirect-selection buildable`: the tests that read the
    node and nothing but it and what is upstream of it. A test on a source (not a task) or over two
    models neither upstream of the other is in no such selection; it belongs to the last layer of
    those it reads, where everything it reads has been built."""
    ancestors: dict[str, frozenset[str]] = {}

    def upstream(unique_id: str) -> frozenset[str]:
        if unique_id not in ancestors:
            parents = nodes[unique_id].depends_on if unique_id in nodes else []
            ancestors[unique_id] = frozenset(parents).union(*(upstream(p) for p in parents))
        return ancestors[unique_id]

    task_kinds = {DbtResourceType.MODEL, DbtResourceType.SEED, DbtResourceType.SNAPSHOT}
    wanted = list(LAYERS).index(layer)
    names = []
    for node in nodes.values():
        if node.resource_type != DbtResourceType.TEST:
            continue
        parents = [nodes[p] for p in node.depends_on if p in nodes]
        run_by_a_node_task = any(
            parent.resource_type in task_kinds
            and set(node.depends_on) <= {parent.unique_id} | upstream(parent.unique_id)
            for parent in parents
        )
        layers = [_layer_of(parent) for parent in parents]
        if not run_by_a_node_task and layers and None not in layers and max(layers) == wanted:
            names.append(node.unique_id.split(".")[2])
    return sorted(names)
