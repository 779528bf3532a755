"""Copy one source table into ``staging.<table>`` of the warehouse by streaming COPY.

Rows flow from the source's ``COPY ... TO STDOUT`` straight into the warehouse's ``COPY ... FROM STDIN``
in binary blocks: no pandas, no table held in memory. The truncate, the copy and the load record
commit in one transaction, so a reader sees the old rows or the new ones, never half a load, and
running it twice leaves the same rows.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass

from psycopg import sql

from include.pacbook.warehouse import connect

log = logging.getLogger("pacbook.extract")

WRITE_CHUNK_BYTES = 1 << 20


class SourceTableMissingError(RuntimeError):
    pass


class StagingSchemaDriftError(RuntimeError):
    pass


@dataclass(frozen=True)
class Column:
    name: str
    type: str


def source_columns(conn, table: str) -> list[Column]:
    rows = conn.execute(
        """
        select a.attname, format_type(a.atttypid, a.atttypmod)
        from pg_attribute a
        join pg_class c on c.oid = a.attrelid
        join pg_namespace n on n.oid = c.relnamespace
        where n.nspname = 'public' and c.relname = %s and c.relkind in ('r', 'p', 'v', 'm')
          and a.attnum > 0 and not a.attisdropped
        order by a.attnum
        """,
        (table,),
    ).fetchall()
    return [Column(name, type_) for name, type_ in rows]


def _staging_columns(conn, table: str) -> list[Column]:
    rows = conn.execute(
        """
        select a.attname, format_type(a.atttypid, a.atttypmod)
        from pg_attribute a
        join pg_class c on c.oid = a.attrelid
        join pg_namespace n on n.oid = c.relnamespace
        where n.nspname = 'staging' and c.relname = %s and c.relkind = 'r'
          and a.attnum > 0 and not a.attisdropped
        order by a.attnum
        """,
        (table,),
    ).fetchall()
    return [Column(name, type_) for name, type_ in rows]


def _ensure_staging_table(conn, table: str, columns: list[Column]) -> tuple[list[Column], list[Column]]:
    """Creates staging.<table> on first sight; returns the columns to copy and the source's new ones.

    A column the source added is not copied (staging keeps its shape, the rows still load) but is
    reported; a column staging has and the source lost or retyped stops the load, because every
    model reading it would silently change meaning.
    """
    existing = _staging_columns(conn, table)
    if not existing:
        column_defs = sql.SQL(", ").join(
            sql.SQL("{} {}").format(sql.Identifier(col.name), sql.SQL(col.type)) for col in columns
        )
        conn.execute(sql.SQL("create table staging.{} ({})").format(sql.Identifier(table), column_defs))
        return columns, []
    missing = [c for c in existing if c not in columns]
    if missing:
        added = [c.name for c in columns if c not in existing]
        raise StagingSchemaDriftError(
            f"source table public.{table} no longer matches staging.{table}: "
            f"missing or changed columns {[c.name for c in missing]}, new or changed columns {added or 'none'}; "
            "review the change, then drop staging." + table + " to accept it (RUNBOOK.md#schema-drift)"
        )
    return existing, [c for c in columns if c not in existing]


class EmptySourceTableError(RuntimeError):
    pass


def check_table_copyable(source_uri: str, warehouse_uri: str, table: str) -> int:
    """What a copy would meet, without copying: the source table exists and staging can take it.
    Returns the source's row count; raises the same errors a copy would."""
    with connect(source_uri) as source, connect(warehouse_uri) as warehouse:
        source.read_only = True
        columns = source_columns(source, table)
        if not columns:
            raise SourceTableMissingError(f"source table public.{table} does not exist")
        existing = _staging_columns(warehouse, table)
        if existing and any(c not in columns for c in existing):
            _ensure_staging_table(warehouse, table, columns)  # raises the drift error with the details
        return source.execute(sql.SQL("select count(*) from public.{}").format(sql.Identifier(table))).fetchone()[0]


def copy_table_to_staging(source_uri: str, warehouse_uri: str, table: str, run_id: str) -> int:
    """Replaces staging.<table> with the source's rows and records the load; returns rows copied."""
    started_at = dt.datetime.now(dt.UTC)
    with connect(source_uri) as source, connect(warehouse_uri) as warehouse:
        source.read_only = True
        columns = source_columns(source, table)
        if not columns:
            raise SourceTableMissingError(f"source table public.{table} does not exist")
        with warehouse.transaction():
            columns, added = _ensure_staging_table(warehouse, table, columns)
            for column in added:
                log.warning(
                    "source table public.%s has a new column %s (%s) that staging.%s does not take: "
                    "the rows load without it (RUNBOOK.md#schema-drift)",
                    table,
                    column.name,
                    column.type,
                    table,
                )
                warehouse.execute(
                    "insert into audit.source_schema_change (run_id, table_name, change, column_name, column_type) "
                    "values (%s, %s, 'column added, not copied', %s, %s) on conflict do nothing",
                    (run_id, table, column.name, column.type),
                )
            column_list = sql.SQL(", ").join(sql.Identifier(col.name) for col in columns)
            read = sql.SQL("copy (select {} from public.{}) to stdout (format binary)").format(
                column_list, sql.Identifier(table)
            )
            write = sql.SQL("copy staging.{} ({}) from stdin (format binary)").format(
                sql.Identifier(table), column_list
            )
            # Truncate inside the transaction: readers wait for the commit and then see the whole new
            # load (never half of it), and unlike `delete` it leaves no dead rows behind.
            warehouse.execute(sql.SQL("truncate staging.{}").format(sql.Identifier(table)))
            with warehouse.cursor() as sink, source.cursor() as reader:
                with reader.copy(read) as rows_out, sink.copy(write) as rows_in:
                    # The server sends one message per row; writing ~1 MiB at a time instead of
                    # row by row keeps the Python loop off the critical path (bench/README.md).
                    buffer = bytearray()
                    for block in rows_out:
                        buffer += block
                        if len(buffer) >= WRITE_CHUNK_BYTES:
                            rows_in.write(buffer)
                            buffer = bytearray()
                    if buffer:
                        rows_in.write(buffer)
                rows = sink.rowcount
            if rows == 0:
                # Rolled back with the truncate: staging keeps the last good copy instead of nothing.
                raise EmptySourceTableError(
                    f"source table public.{table} is empty: a shop never loses all of its {table} rows, so the "
                    f"previous copy in staging.{table} is kept (RUNBOOK.md#extraction-failed)"
                )
            warehouse.execute(
                """
                insert into audit.extract_load (run_id, table_name, rows_loaded, started_at)
                values (%s, %s, %s, %s)
                on conflict (run_id, table_name) do update
                set rows_loaded = excluded.rows_loaded, started_at = excluded.started_at,
                    finished_at = clock_timestamp()
                """,
                (run_id, table, rows, started_at),
            )
        warehouse.execute(sql.SQL("analyze staging.{}").format(sql.Identifier(table)))
        warehouse.commit()
    return rows
