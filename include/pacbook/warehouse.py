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
