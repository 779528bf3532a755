"""``audit.pipeline_run``: one row per DAG run, from its first task to its last.

The first task marks the run started, and the warehouse_free gate gives it the warehouse (one
writing run at a time: backfills run beside the nightly schedule); the last one (``finish_run``, or
``check_extraction`` in a dry run) marks it done with the rows read, written and rejected per source
table; the task audit listener marks it failed when any task fails for good. A clear-and-rerun
starts the row again.
"""

from __future__ import annotations

import datetime as dt
import json

from include.pacbook import warehouse


def run_started(
    uri: str,
    dag_id: str,
    run_id: str,
    run_type: str | None,
    interval_start: dt.datetime | None,
    interval_end: dt.datetime | None,
) -> None:
    warehouse.ensure_schemas(uri)
    with warehouse.connect(uri, autocommit=True) as conn:
        conn.execute(
            """
            insert into audit.pipeline_run (dag_id, run_id, run_type, data_interval_start, data_interval_end, status)
            values (%s, %s, %s, %s, %s, 'running')
            on conflict (dag_id, run_id) do update set
                status = 'running', started_at = clock_timestamp(), finished_at = null,
                failed_task = null, error = null, holds_warehouse_since = null
            where audit.pipeline_run.status <> 'running'
            """,
            (dag_id, run_id, run_type, interval_start, interval_end),
        )


def take_warehouse(uri: str, dag_id: str, run_id: str) -> str | None:
    """Gives the run the warehouse unless another running run holds it; returns that holder, if any.

    The check and the take are one transaction under a lock on the table, so two runs asking at
    once cannot both get it. A run that holds it and asks again (a cleared task) keeps it.
    """
    with warehouse.connect(uri) as conn, conn.transaction():
        conn.execute("lock table audit.pipeline_run in share row exclusive mode")
        holder = conn.execute(
            """
            select run_id, holds_warehouse_since from audit.pipeline_run
            where status = 'running' and holds_warehouse_since is not null and (dag_id, run_id) <> (%s, %s)
            order by holds_warehouse_since
            limit 1
            """,
            (dag_id, run_id),
        ).fetchone()
        if holder:
            return f"run {holder[0]} has held it since {holder[1]:%Y-%m-%d %H:%M:%S %Z}"
        conn.execute(
            """
            update audit.pipeline_run set holds_warehouse_since = coalesce(holds_warehouse_since, clock_timestamp())
            where dag_id = %s and run_id = %s
            """,
            (dag_id, run_id),
        )
    return None


def run_failed(uri: str, dag_id: str, run_id: str, task_id: str, error: str | None) -> None:
    with warehouse.connect(uri, autocommit=True) as conn:
        conn.execute(
            """
            insert into audit.pipeline_run (dag_id, run_id, status, finished_at, failed_task, error)
            values (%s, %s, 'failed', clock_timestamp(), %s, %s)
            on conflict (dag_id, run_id) do update set
                status = 'failed', finished_at = clock_timestamp(),
                failed_task = excluded.failed_task, error = excluded.error
            """,
            (dag_id, run_id, task_id, (error or "")[:2000]),
        )


def rows_by_table(uri: str, run_id: str) -> dict[str, dict[str, int]]:
    """Rows read from the source, rejected by validation and written to staging, per source table.
    Written: the rows the run's validation admitted; rejected also counts older rows a parent's
    rejection orphaned that night, so read - rejected is not what was written."""
    with warehouse.connect(uri) as conn:
        rows = conn.execute(
            """
            select
                loads.table_name,
                loads.rows_loaded,
                coalesce(checks.rows_rejected, 0),
                coalesce(
                    checks.new_rows_checked - checks.new_rows_rejected,
                    loads.rows_loaded - coalesce(checks.rows_rejected, 0)
                )
            from audit.extract_load as loads
            left join audit.staging_validation as checks
                on checks.run_id = loads.run_id and checks.table_name = loads.table_name
            where loads.run_id = %s
            order by loads.table_name
            """,
            (run_id,),
        ).fetchall()
    return {table: {"read": read, "rejected": rejected, "written": written} for table, read, rejected, written in rows}


def run_succeeded(uri: str, dag_id: str, run_id: str) -> dict[str, dict[str, int]]:
    counts = rows_by_table(uri, run_id)
    with warehouse.connect(uri, autocommit=True) as conn:
        conn.execute(
            """
            update audit.pipeline_run set
                status = 'success', finished_at = clock_timestamp(), failed_task = null, error = null,
                rows_read = %s, rows_written = %s, rows_rejected = %s, rows_by_table = %s
            where dag_id = %s and run_id = %s
            """,
            (
                sum(c["read"] for c in counts.values()),
                sum(c["written"] for c in counts.values()),
                sum(c["rejected"] for c in counts.values()),
                json.dumps(counts),
                dag_id,
                run_id,
            ),
        )
    return counts
