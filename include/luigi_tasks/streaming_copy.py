"""Copy one source table into ``staging.<table>`` of the warehouse by streaming COPY.

Rows flow from the source's ``COPY ... TO STDOUT`` straight into the warehouse's ``COPY ... FROM STDIN``
in binary blocks: no pandas, no table held in memory. The write, the load record and the watermark
commit in one transaction, so a reader sees the old rows or the new ones, never half a load, and
running it twice leaves the same rows.

Small tables are replaced whole when they changed: each night compares a fingerprint of the source
table with the one recorded at its last copy, and an unchanged table keeps its copy. The
fast-growing ones (``GROWING_TABLES``) are loaded by increments: the rows whose event time falls in
the run's data interval, plus the rows inserted since the last load whatever their date (a status
recorded days late), found by a watermark on the table's serial key kept in
``audit.extraction_watermark``. They replace the staging rows with the same key, so a night loaded
twice, or nights loaded out of order, leave the same staging tables as nights loaded in order. Rows
dated after the interval wait for their own night; rows dated after the copy itself (impossible
dates) are taken at once, so validation quarantines them instead of them waiting forever.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass

from psycopg import sql

from include.pacbook.session_roles import connect_source
from include.pacbook.warehouse import connect, track_staging_changes

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
    existing = [c for c in _staging_columns(conn, table) if c.name != LOADED_AT_COLUMN]
    if not existing:
        column_defs = sql.SQL(", ").join(
            sql.SQL("{} {}").format(sql.Identifier(col.name), sql.SQL(col.type)) for col in columns
        )
        conn.execute(sql.SQL("create table staging.{} ({})").format(sql.Identifier(table), column_defs))
        track_staging_changes(conn, table)
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


# Written by the load, not copied from the source: when the row reached staging. The incremental
# facts rebuild the orders whose rows arrived after their last build.
LOADED_AT_COLUMN = "_pacbook_loaded_at"


@dataclass(frozen=True)
class GrowingTable:
    key: str  # serial primary key: names a row, and its high-water mark finds rows inserted late
    event_time: str  # SQL over the source table `t` (and its order `o`): when the row happened
    through_order: bool = False  # no date of its own: dated by its order


GROWING_TABLES = {
    "cust_order": GrowingTable(key="order_id", event_time="t.order_date"),
    "order_line": GrowingTable(key="line_id", event_time="o.order_date", through_order=True),
    "order_history": GrowingTable(key="history_id", event_time="t.status_date"),
}


@dataclass(frozen=True)
class LoadWindow:
    """The run's data interval (naive UTC, as the source stores its timestamps) and when the copy is taken."""

    start: dt.datetime
    end: dt.datetime
    as_of: dt.datetime


def check_table_copyable(source_uri: str, warehouse_uri: str, table: str) -> int:
    """What a copy would meet, without copying: the source table exists and staging can take it.
    Returns the source's row count; raises the same errors a copy would."""
    with connect_source(source_uri) as source, connect(warehouse_uri) as warehouse:
        columns = source_columns(source, table)
        if not columns:
            raise SourceTableMissingError(f"source table public.{table} does not exist")
        existing = [c for c in _staging_columns(warehouse, table) if c.name != LOADED_AT_COLUMN]
        if existing and any(c not in columns for c in existing):
            _ensure_staging_table(warehouse, table, columns)  # raises the drift error with the details
        return source.execute(sql.SQL("select count(*) from public.{}").format(sql.Identifier(table))).fetchone()[0]


def copy_table_to_staging(
    source_uri: str,
    warehouse_uri: str,
    table: str,
    run_id: str,
    window: LoadWindow | None = None,
    full_refresh: bool = False,
) -> int:
    """Loads staging.<table> and records the load; returns rows copied.

    Without a window every table is replaced whole. With one, a growing table takes its increment
    (or, on its first load and on ``full_refresh``, everything up to the window's end).
    """
    started_at = dt.datetime.now(dt.UTC)
    growing = GROWING_TABLES.get(table)
    with connect_source(source_uri) as source, connect(warehouse_uri) as warehouse:
        columns = source_columns(source, table)
        if not columns:
            raise SourceTableMissingError(f"source table public.{table} does not exist")
        with warehouse.transaction():
            columns, added = _ensure_staging_table(warehouse, table, columns)
            _record_added_columns(warehouse, run_id, table, added)
            if growing:
                _ensure_loaded_at_column(warehouse, table)
            fingerprint = None
            if growing and window:
                rows, mode = _load_growing_table(
                    source, warehouse, run_id, table, columns, growing, window, full_refresh
                )
            elif growing:
                _drop_loaded_at_index(warehouse, table)
                rows, mode = _replace_table(source, warehouse, table, columns), "full"
                _record_watermark(warehouse, run_id, table, growing, mode)
            else:
                rows, mode, fingerprint = _copy_small_table(
                    source, warehouse, table, columns, compare=window is not None and not full_refresh
                )
            if growing:
                _index_loaded_at(warehouse, table)
            if rows == 0 and (mode == "full" or _source_is_empty(source, table)):
                # Rolled back with the write: staging keeps the last good copy instead of nothing.
                raise EmptySourceTableError(
                    f"source table public.{table} is empty: a shop never loses all of its {table} rows, so the "
                    f"previous copy in staging.{table} is kept (RUNBOOK.md#extraction-failed)"
                )
            warehouse.execute(
                """
                insert into audit.extract_load
                    (run_id, table_name, rows_loaded, started_at, load_mode, source_fingerprint)
                values (%s, %s, %s, %s, %s, %s)
                on conflict (run_id, table_name) do update
                set rows_loaded = excluded.rows_loaded, started_at = excluded.started_at,
                    load_mode = excluded.load_mode, source_fingerprint = excluded.source_fingerprint,
                    finished_at = clock_timestamp()
                """,
                (run_id, table, rows, started_at, mode, fingerprint),
            )
        if mode != "unchanged":
            warehouse.execute(sql.SQL("analyze staging.{}").format(sql.Identifier(table)))
        warehouse.commit()
    return rows


def _record_added_columns(warehouse, run_id: str, table: str, added: list[Column]) -> None:
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


def _source_is_empty(source, table: str) -> bool:
    query = sql.SQL("select not exists (select from public.{})").format(sql.Identifier(table))
    return source.execute(query).fetchone()[0]


def _stream(source, warehouse, read: sql.Composable, write: sql.Composable) -> int:
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
        return sink.rowcount


def _replace_table(source, warehouse, table: str, columns: list[Column]) -> int:
    column_list = sql.SQL(", ").join(sql.Identifier(col.name) for col in columns)
    read = sql.SQL("copy (select {} from public.{}) to stdout (format binary)").format(
        column_list, sql.Identifier(table)
    )
    write = sql.SQL("copy staging.{} ({}) from stdin (format binary)").format(sql.Identifier(table), column_list)
    # Truncate inside the transaction: readers wait for the commit and then see the whole new
    # load (never half of it), and unlike `delete` it leaves no dead rows behind.
    warehouse.execute(sql.SQL("truncate staging.{}").format(sql.Identifier(table)))
    return _stream(source, warehouse, read, write)


def _copy_small_table(source, warehouse, table: str, columns: list[Column], compare: bool) -> tuple[int, str, str]:
    """Replaces a small table whole, or leaves it when the source still holds the rows staging has.

    Returns rows copied, the load mode ("full", or "unchanged" when nothing was copied) and the
    source's fingerprint, recorded with the load so the next night can compare. A night that finds
    its small tables unchanged rewrites, re-analyses and revalidates none of them.
    """
    fingerprint = _fingerprint(source, table, columns)
    if compare:
        last = warehouse.execute(
            "select source_fingerprint from audit.extract_load where table_name = %s "
            "and source_fingerprint is not null order by finished_at desc limit 1",
            (table,),
        ).fetchone()
        staged = warehouse.execute(
            sql.SQL("select exists (select from staging.{})").format(sql.Identifier(table))
        ).fetchone()[0]
        if last and last[0] == fingerprint and staged:
            log.info("extract table=%s mode=unchanged fingerprint=%s: staging keeps its copy", table, fingerprint)
            return 0, "unchanged", fingerprint
    return _replace_table(source, warehouse, table, columns), "full", fingerprint


def _fingerprint(source, table: str, columns: list[Column]) -> str:
    """The table's row count and an order-free sum of its rows' hashes: equal means the same rows."""
    row = sql.SQL("row({})").format(sql.SQL(", ").join(sql.Identifier("t", col.name) for col in columns))
    query = sql.SQL(
        "select count(*) || ':' || coalesce(sum(('x' || left(md5({}::text), 15))::bit(60)::bigint), 0) "
        "from public.{} as t"
    ).format(row, sql.Identifier(table))
    return source.execute(query).fetchone()[0]


def increment_filter(growing: GrowingTable, window: LoadWindow, watermark: int | None) -> sql.Composable:
    """Which source rows a load takes. ``watermark`` None means everything up to the window's end."""
    event = sql.SQL(growing.event_time)
    values = {
        "event": event,
        "key": sql.SQL("t.{}").format(sql.Identifier(growing.key)),
        "start": sql.Literal(window.start),
        "end": sql.Literal(window.end),
        "as_of": sql.Literal(window.as_of),
    }
    # Undated rows and rows dated after the copy are impossible: taken so validation quarantines them.
    up_to_end = sql.SQL("({event} < {end} or {event} is null or {event} > {as_of})").format(**values)
    if watermark is None:
        return up_to_end
    return sql.SQL("(({event} >= {start} and {event} < {end}) or ({key} > {watermark} and {up_to_end}))").format(
        watermark=sql.Literal(watermark), up_to_end=up_to_end, **values
    )


def _load_growing_table(
    source,
    warehouse,
    run_id: str,
    table: str,
    columns: list[Column],
    growing: GrowingTable,
    window: LoadWindow,
    full_refresh: bool,
) -> tuple[int, str]:
    staging = sql.Identifier("staging", table)
    found = warehouse.execute(
        "select high_water_key from audit.extraction_watermark where table_name = %s for update", (table,)
    ).fetchone()
    watermark = None if full_refresh or found is None else found[0]
    mode = "full" if watermark is None else "increment"
    column_list = sql.SQL(", ").join(sql.Identifier(col.name) for col in columns)
    source_columns_list = sql.SQL(", ").join(sql.Identifier("t", col.name) for col in columns)
    order_join = sql.SQL("left join public.cust_order as o on o.order_id = t.order_id" if growing.through_order else "")
    read = sql.SQL("copy (select {} from public.{} as t {} where {}) to stdout (format binary)").format(
        source_columns_list, sql.Identifier(table), order_join, increment_filter(growing, window, watermark)
    )
    key = sql.Identifier(growing.key)
    if mode == "full":
        _drop_loaded_at_index(warehouse, table)
        warehouse.execute(sql.SQL("truncate {}").format(staging))
        rows = _stream(
            source, warehouse, read, sql.SQL("copy {} ({}) from stdin (format binary)").format(staging, column_list)
        )
        high_water = None
    else:
        incoming = sql.Identifier("pacbook_incoming")
        warehouse.execute(
            sql.SQL("create temporary table {} (like {} including defaults) on commit drop").format(incoming, staging)
        )
        rows = _stream(
            source, warehouse, read, sql.SQL("copy {} ({}) from stdin (format binary)").format(incoming, column_list)
        )
        # A row taken again (its night rerun, a late change) replaces its earlier copy: never doubled.
        warehouse.execute(
            sql.SQL("delete from {staging} as s using {incoming} as i where s.{key} = i.{key}").format(
                staging=staging, incoming=incoming, key=key
            )
        )
        warehouse.execute(
            sql.SQL("insert into {} ({}) select {} from {}").format(staging, column_list, column_list, incoming)
        )
        high_water = sql.SQL("select max({}) from {}").format(key, incoming)
    _record_watermark(warehouse, run_id, table, growing, mode, high_water)
    log.info("extract table=%s mode=%s rows=%d watermark_before=%s", table, mode, rows, watermark)
    return rows, mode


def _ensure_loaded_at_column(warehouse, table: str) -> None:
    """Every row of a growing table carries when it reached staging (the load's transaction time).
    Altered only when missing: `alter table` locks out the table's readers until the load commits."""
    if LOADED_AT_COLUMN not in {column.name for column in _staging_columns(warehouse, table)}:
        warehouse.execute(
            sql.SQL("alter table {} add column {} timestamptz not null default now()").format(
                sql.Identifier("staging", table), sql.Identifier(LOADED_AT_COLUMN)
            )
        )


def _loaded_at_index(table: str) -> str:
    return f"{table}_loaded_at"


def _drop_loaded_at_index(warehouse, table: str) -> None:
    """Before a whole copy: building the index once afterwards is faster than growing it row by row
    (scale 100: a full extraction took 11 s longer with the index in place)."""
    warehouse.execute(sql.SQL("drop index if exists {}").format(sql.Identifier("staging", _loaded_at_index(table))))


def _index_loaded_at(warehouse, table: str) -> None:
    """Validation and the incremental models look up the rows loaded since their last pass by this
    index (a night is 1% of the rows: 0.14 ms instead of 0.5 s per lookup at scale 100)."""
    warehouse.execute(
        sql.SQL("create index if not exists {} on {} ({})").format(
            sql.Identifier(_loaded_at_index(table)), sql.Identifier("staging", table), sql.Identifier(LOADED_AT_COLUMN)
        )
    )


def _record_watermark(
    warehouse, run_id: str, table: str, growing: GrowingTable, mode: str, high_water: sql.Composable | None = None
) -> None:
    """Sets the table's watermark to the highest key staged (a full load) or raises it (an increment)."""
    if high_water is None:
        high_water = sql.SQL("select max({}) from {}").format(
            sql.Identifier(growing.key), sql.Identifier("staging", table)
        )
    # greatest() ignores NULL: an empty increment keeps the mark; a full load sets it afresh.
    warehouse.execute(
        sql.SQL(
            """
            insert into audit.extraction_watermark (table_name, key_column, high_water_key, run_id)
            select %(table)s, %(key)s, ({high_water}), %(run_id)s
            on conflict (table_name) do update
            set high_water_key = case when %(full)s then excluded.high_water_key
                    else greatest(audit.extraction_watermark.high_water_key, excluded.high_water_key) end,
                run_id = excluded.run_id,
                updated_at = clock_timestamp()
            """
        ).format(high_water=high_water),
        {"table": table, "key": growing.key, "run_id": run_id, "full": mode == "full"},
    )
