"""The dbt project rendered by Cosmos: all Cosmos configuration lives here, next to nothing else.

One Airflow task per dbt node (model, snapshot), each running ``dbt build`` on its node so the
node's tests run right after it; one task group per warehouse layer. The project is loaded from the
manifest that ``make`` builds with ``dbt parse``, so parsing the DAG needs neither dbt nor a database.
"""

from __future__ import annotations

from cosmos import (
    DbtTaskGroup,
    ExecutionConfig,
    ProfileConfig,
    ProjectConfig,
    RenderConfig,
)
from cosmos.constants import ExecutionMode, InvocationMode, LoadMode, TestBehavior, TestIndirectSelection
from cosmos.profiles import PostgresUserPasswordProfileMapping

from include.pacbook import config
from include.pacbook.privileges import pii_session_env

# Layers, in the order data flows; each selects the dbt folders whose tables land in that schema.
LAYERS = {
    "staging": ["path:models/staging"],
    "dwh": ["path:models/intermediate", "path:snapshots", "path:seeds", "path:models/dwh"],
    "marts": ["path:models/marts"],
}

# The snapshot stamps new customer versions with the end of the run's data interval (not the wall
# clock), so a backfilled night dates its changes to that night. A manual run without a logical
# date has no interval (Airflow 3) and uses the time it was asked to run.
DBT_VARS = {
    "snapshot_at": "{{ (dag_run.data_interval_end or dag_run.run_after).strftime('%Y-%m-%d %H:%M:%S') }}",
}


def _project() -> ProjectConfig:
    return ProjectConfig(
        dbt_project_path=config.DBT_PROJECT_DIR,
        manifest_path=config.DBT_MANIFEST_PATH,
        project_name=config.DBT_PROJECT_NAME,
        install_dbt_deps=False,
    )


class WarehouseProfileWithPiiKey(PostgresUserPasswordProfileMapping):
    """Cosmos' Postgres profile from the warehouse connection, plus the PII key in dbt's environment.

    Cosmos asks a mapping for its environment only when a task runs (never when the DAG is parsed),
    and passes it to dbt beside the rendered profile, not in it: the key (PGOPTIONS, read by libpq)
    is in no profile, template field, serialized DAG or dbt artefact (docs/security.md#the-key).
    """

    @property
    def env_vars(self) -> dict[str, str]:
        return {**super().env_vars, **pii_session_env(config.pii_encryption_key())}


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
    """The task group that builds one warehouse layer (staging, dwh or marts)."""
    return DbtTaskGroup(
        group_id=layer,
        project_config=_project(),
        profile_config=dbt_profile(),
        execution_config=ExecutionConfig(
            execution_mode=ExecutionMode.LOCAL,
            invocation_mode=InvocationMode.DBT_RUNNER,
            # A test runs with the last of the models it reads: `eager` would run a relationships
            # test with its first parent, before the other one exists.
            test_indirect_selection=TestIndirectSelection.BUILDABLE,
        ),
        render_config=RenderConfig(
            load_method=LoadMode.DBT_MANIFEST,
            select=LAYERS[layer],
            test_behavior=TestBehavior.BUILD,
        ),
        # `full_refresh` is the DAG's trigger parameter: rebuild incremental models from scratch.
        operator_args={"install_deps": False, "vars": DBT_VARS, "full_refresh": "{{ params.full_refresh }}"},
    )
