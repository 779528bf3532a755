"""The warehouse's own bookkeeping: its schemas and the audit of extraction loads."""

from __future__ import annotations

from pathlib import Path

import psycopg

# CONTRACT.md §3: exactly these schemas.
WAREHOUSE_SCHEMAS = ("staging", "dwh", "marts", "audit", "quarantine")

# Every file here is idempotent DDL (create ... if not exists), applied in name order. Each part of the
# pipeline keeps its own file, so adding a bookkeeping table never means editing this module.
DDL_DIR = Path(__file__).with_name("warehouse_ddl")


def warehouse_ddl() -> list[tuple[str, str]]:
    return [(path.name, path.read_text()) for path in sorted(DDL_DIR.glob("*.sql"))]


def connect(uri: str, **kwargs) -> psycopg.Connection:
    return psycopg.connect(uri, connect_timeout=10, application_name="pacbook", **kwargs)


def ensure_schemas(uri: str) -> None:
    """Creates the warehouse schemas and the bookkeeping tables of ``warehouse_ddl/``; safe to repeat and to race."""
    # An advisory lock, because parallel extraction workers call this at the same moment and
    # `create schema if not exists` is not race-free in PostgreSQL.
    with connect(uri, autocommit=True) as conn, conn.transaction():
        conn.execute("select pg_advisory_xact_lock(hashtext('pacbook.ensure_schemas'))")
        # Only the missing ones: `create schema if not exists` checks CREATE on the database before it
        # looks, and the least-privilege loader (docs/security.md) has no CREATE there - the schemas
        # come from apply_privileges, run by an administrator.
        found = conn.execute("select nspname from pg_namespace where nspname = any(%s)", (list(WAREHOUSE_SCHEMAS),))
        existing = {row[0] for row in found}
        for schema in WAREHOUSE_SCHEMAS:
            if schema not in existing:
                conn.execute(psycopg.sql.SQL("create schema {}").format(psycopg.sql.Identifier(schema)))
        for name, ddl in warehouse_ddl():
            try:
                conn.execute(ddl)
            except psycopg.Error as error:
                raise RuntimeError(f"warehouse DDL {name} failed: {error}") from error
        track_staging_changes(conn)


# One statement trigger per kind of write; a delete or update counts only when it touched a row
# (warehouse_ddl/60_audit_dbt_build_state.sql).
CHANGE_TRIGGERS = {
    "pacbook_note_insert": ("insert", ""),
    "pacbook_note_delete": ("delete", "referencing old table as gone_rows"),
    "pacbook_note_update": ("update", "referencing new table as changed_rows"),
    "pacbook_note_truncate": ("truncate", ""),
}


def track_staging_changes(conn: psycopg.Connection, table: str | None = None) -> None:
    """Puts the change triggers on ``staging.<table>`` (default: every staging table without them), so
    ``audit.staging_change`` knows when it last changed. A table seen for the first time counts as
    changed now: whatever was built before from it is rebuilt once. Only tables of the current user's
    roles are touched; another role's tables get theirs when that role runs this."""
    untracked = conn.execute(
        """
        select c.relname from pg_class c join pg_namespace n on n.oid = c.relnamespace
        where n.nspname = 'staging' and c.relkind = 'r' and (%(table)s::text is null or c.relname = %(table)s)
          -- a trigger needs the table's owner: the loader puts them on the tables it creates
          and pg_has_role(current_user, c.relowner, 'usage')
          and (select count(*) from pg_trigger t where t.tgrelid = c.oid and t.tgname = any(%(triggers)s))
              < cardinality(%(triggers)s)
        """,
        {"table": table, "triggers": list(CHANGE_TRIGGERS)},
    ).fetchall()
    create_trigger = psycopg.sql.SQL(
        "create or replace trigger {} after {} on {} {} for each statement execute function audit.note_staging_change()"
    )
    for (name,) in untracked:
        for trigger, (event, referencing) in CHANGE_TRIGGERS.items():
            conn.execute(
                create_trigger.format(
                    psycopg.sql.Identifier(trigger),
                    psycopg.sql.SQL(event),
                    psycopg.sql.Identifier("staging", name),
                    psycopg.sql.SQL(referencing),
                )
            )
        conn.execute(
            "insert into audit.staging_change (table_name, changed_at) values (%s, clock_timestamp()) "
            "on conflict (table_name) do nothing",
            (name,),
        )


def load_is_recorded(uri: str, run_id: str, table: str) -> bool:
    with connect(uri) as conn:
        found = conn.execute(
            "select 1 from pg_tables where schemaname = 'audit' and tablename = 'extract_load'"
        ).fetchone()
        if not found:
            return False
        row = conn.execute(
            "select 1 from audit.extract_load where run_id = %s and table_name = %s", (run_id, table)
        ).fetchone()
        return row is not None


def record_failure(uri: str, run_id: str, table: str, error: str) -> None:
    with connect(uri, autocommit=True) as conn:
        conn.execute(
            "insert into audit.extract_failure (run_id, table_name, error) values (%s, %s, %s)",
            (run_id, table, error[:2000]),
        )


def failures_for_run(uri: str, run_id: str, since) -> dict[str, str]:
    """The latest failure reason per table for this run, recorded at or after `since`."""
    with connect(uri) as conn:
        rows = conn.execute(
            """
            select distinct on (table_name) table_name, error
            from audit.extract_failure
            where run_id = %s and failed_at >= %s
            order by table_name, failed_at desc
            """,
            (run_id, since),
        ).fetchall()
    return dict(rows)


def forget_loads(uri: str, run_id: str) -> int:
    """Drops the run's load records so a full refresh copies every table again."""
    with connect(uri) as conn:
        return conn.execute("delete from audit.extract_load where run_id = %s", (run_id,)).rowcount
