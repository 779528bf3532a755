"""The analysts' columnar copy of the marts: one Parquet file per mart and one DuckDB file of them all.

    <export_dir>/parquet/<mart>.parquet   every table, view and materialised view of schema ``marts``
    <export_dir>/pacbook_marts.duckdb     one table per mart, loaded from those Parquet files
    <export_dir>/manifest.json            mart → rows, columns and types; exported_at, run id and date

How it stays safe for readers:

* **One snapshot.** Every mart is read in one ``repeatable read`` read-only transaction, so the files
  agree with each other even while dbt rebuilds a mart.
* **Flat memory.** Rows come through a server-side cursor in batches of ``BATCH_ROWS`` and are
  written to Parquet batch by batch; DuckDB then reads the Parquet files itself.
* **Nothing half-written.** Every file is first written under a hidden temporary name in its own
  folder (``.<name>.tmp-<token>``); only when all of them are complete, and the DuckDB copy has been
  checked row for row, are they moved over the published names with ``os.replace`` (atomic on one
  file system). A reader opens either the old file or the new one; a failed export leaves the last
  good export untouched and removes its temporary files.

Types (PostgreSQL → Parquet): integers keep their width; ``numeric(p, s)`` → ``decimal(p, s)``;
unconstrained ``numeric`` → ``decimal(38, s)`` with ``s`` = the largest scale in the column's data
(exact, so sums match the warehouse to the cent) — or ``float64`` in the rare case the values need
more than 38 digits; ``real``/``double`` → float; ``date`` → date32; ``timestamp`` →
timestamp[us]; ``timestamptz`` → timestamp[us, UTC]; ``boolean`` → bool; text and everything else
→ string (the value's PostgreSQL text form).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import pyarrow as pa
import pyarrow.parquet as pq
from psycopg import sql

log = logging.getLogger("pacbook.exports")

MARTS_SCHEMA = "marts"
DUCKDB_FILE = "pacbook_marts.duckdb"
PARQUET_DIR = "parquet"
MANIFEST_FILE = "manifest.json"
BATCH_ROWS = 50_000
MAX_DECIMAL_PRECISION = 38
# The oldest DuckDB file format that holds these types: any DuckDB from 1.0 on (CLI, Python, R, DBeaver)
# opens the file, not only the DuckDB that wrote it.
DUCKDB_STORAGE_VERSION = "v1.0.0"

_INTEGERS = {"int2": pa.int16(), "int4": pa.int32(), "int8": pa.int64(), "oid": pa.int64()}
_FLOATS = {"float4": pa.float32(), "float8": pa.float64()}


class ExportError(RuntimeError):
    pass


@dataclass
class MartColumn:
    name: str
    pg_type: str  # format_type(), e.g. "numeric(14,2)", "timestamp without time zone"
    type_name: str  # pg_type.typname, e.g. "numeric", "timestamp"
    precision: int | None = None
    scale: int | None = None
    arrow_type: pa.DataType = field(default_factory=pa.string)

    @property
    def as_text(self) -> bool:
        """Read as its text form: types without a faithful Arrow counterpart (json, arrays, enums ...)."""
        return pa.types.is_string(self.arrow_type) and self.type_name not in ("text", "varchar", "bpchar", "name")

    @property
    def as_float(self) -> bool:
        return self.type_name == "numeric" and pa.types.is_floating(self.arrow_type)


def list_marts(conn: psycopg.Connection, schema: str = MARTS_SCHEMA) -> list[str]:
    """Every table and view of the schema (information_schema) plus its materialised views, by name."""
    rows = conn.execute(
        """
        select table_name from information_schema.tables where table_schema = %(schema)s
        union
        select matviewname from pg_matviews where schemaname = %(schema)s
        order by 1
        """,
        {"schema": schema},
    ).fetchall()
    return [name for (name,) in rows]


def _columns(conn: psycopg.Connection, schema: str, relation: str) -> list[MartColumn]:
    rows = conn.execute(
        """
        select a.attname, format_type(a.atttypid, a.atttypmod), t.typname, a.atttypmod
        from pg_attribute as a
        join pg_type as t on t.oid = a.atttypid
        where a.attrelid = %s::regclass and a.attnum > 0 and not a.attisdropped
        order by a.attnum
        """,
        (sql.Identifier(schema, relation).as_string(conn),),
    ).fetchall()
    columns = []
    for name, pg_type, type_name, typmod in rows:
        column = MartColumn(name=name, pg_type=pg_type, type_name=type_name)
        if type_name == "numeric" and typmod >= 4:
            column.precision, column.scale = ((typmod - 4) >> 16) & 0xFFFF, (typmod - 4) & 0xFFFF
        columns.append(column)
    return columns


def _decide_types(conn: psycopg.Connection, schema: str, relation: str, columns: list[MartColumn]) -> None:
    """Sets each column's Arrow type; unconstrained numerics get the scale their data needs."""
    open_numerics = [c for c in columns if c.type_name == "numeric" and c.precision is None]
    observed: dict[str, tuple[int | None, int | None]] = {}
    if open_numerics:
        # Largest scale and largest count of integer digits per column, in one pass over the mart.
        probes = sql.SQL(", ").join(
            sql.SQL("max(scale({c})), max(length(trunc(abs({c}))::text))").format(c=sql.Identifier(c.name))
            for c in open_numerics
        )
        row = conn.execute(sql.SQL("select {} from {}").format(probes, sql.Identifier(schema, relation))).fetchone()
        for i, column in enumerate(open_numerics):
            observed[column.name] = (row[2 * i], row[2 * i + 1])
    for column in columns:
        if column.type_name in _INTEGERS:
            column.arrow_type = _INTEGERS[column.type_name]
        elif column.type_name in _FLOATS:
            column.arrow_type = _FLOATS[column.type_name]
        elif column.type_name == "numeric":
            if column.precision is not None and 0 < column.precision <= MAX_DECIMAL_PRECISION:
                column.arrow_type = pa.decimal128(column.precision, column.scale)
            elif column.precision is not None:
                column.arrow_type = pa.float64()
            else:
                scale, digits = observed[column.name]
                scale, digits = scale or 0, digits or 1
                if scale + digits <= MAX_DECIMAL_PRECISION:
                    column.arrow_type = pa.decimal128(MAX_DECIMAL_PRECISION, scale)
                else:
                    needed = scale + digits
                    log.warning("export %s.%s: values need %d digits; float64", relation, column.name, needed)
                    column.arrow_type = pa.float64()
        elif column.type_name == "bool":
            column.arrow_type = pa.bool_()
        elif column.type_name == "date":
            column.arrow_type = pa.date32()
        elif column.type_name == "timestamp":
            column.arrow_type = pa.timestamp("us")
        elif column.type_name == "timestamptz":
            column.arrow_type = pa.timestamp("us", tz="UTC")
        else:
            column.arrow_type = pa.string()


def _select(schema: str, relation: str, columns: list[MartColumn]) -> sql.Composed:
    def expression(column: MartColumn) -> sql.Composable:
        ident = sql.Identifier(column.name)
        if column.as_text:
            return sql.SQL("{}::text as {}").format(ident, ident)
        if column.as_float:
            return sql.SQL("{}::float8 as {}").format(ident, ident)
        return ident

    return sql.SQL("select {} from {}").format(
        sql.SQL(", ").join(expression(c) for c in columns), sql.Identifier(schema, relation)
    )


def _arrow_schema(relation: str, columns: list[MartColumn]) -> pa.Schema:
    return pa.schema(
        [pa.field(c.name, c.arrow_type, metadata={"postgres_type": c.pg_type}) for c in columns],
        metadata={"source": f"{MARTS_SCHEMA}.{relation}"},
    )


def _temporary_name(path: Path, token: str) -> Path:
    return path.with_name(f".{path.name}.tmp-{token}")


def _write_parquet(conn: psycopg.Connection, relation: str, columns: list[MartColumn], path: Path) -> int:
    """Streams the mart into ``path`` batch by batch; returns the number of rows."""
    schema = _arrow_schema(relation, columns)
    rows = 0
    with (
        conn.cursor(name=f"export_{relation}"[:63]) as cursor,
        pq.ParquetWriter(path, schema, compression="zstd") as writer,
    ):
        cursor.itersize = BATCH_ROWS
        cursor.execute(_select(MARTS_SCHEMA, relation, columns))
        while batch := cursor.fetchmany(BATCH_ROWS):
            arrays = [pa.array([row[i] for row in batch], type=column.arrow_type) for i, column in enumerate(columns)]
            writer.write_batch(pa.RecordBatch.from_arrays(arrays, schema=schema))
            rows += len(batch)
        if rows == 0:
            writer.write_table(schema.empty_table())
    return rows


def _duckdb_literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _duckdb_identifier(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _build_duckdb(path: Path, parquet_files: dict[str, Path], expected_rows: dict[str, int]) -> None:
    """One table per mart, created from its Parquet file, then checked row for row."""
    import duckdb

    settings = {"storage_compatibility_version": DUCKDB_STORAGE_VERSION}
    with contextlib.closing(duckdb.connect(str(path), config=settings)) as db:
        for mart, parquet in parquet_files.items():
            table, source = _duckdb_identifier(mart), _duckdb_literal(str(parquet))
            db.execute(f"create table {table} as select * from read_parquet({source})")
            db.execute(
                f"comment on table {_duckdb_identifier(mart)} is "
                f"{_duckdb_literal(f'copy of the warehouse table {MARTS_SCHEMA}.{mart}')}"
            )
            (count,) = db.execute(f"select count(*) from {_duckdb_identifier(mart)}").fetchone()
            if count != expected_rows[mart]:
                raise ExportError(f"export {mart}: DuckDB holds {count} rows, the warehouse {expected_rows[mart]}")
        db.execute("checkpoint")
    wal = path.with_name(path.name + ".wal")
    if wal.exists():  # a clean close checkpoints; a left-over WAL would belong to the temporary name
        raise ExportError(f"export: DuckDB left a write-ahead log beside {path.name}")


def _remove_leftovers(folder: Path) -> None:
    """Temporary files of an export that crashed before it could clean up."""
    for leftover in folder.glob(".*.tmp-*"):
        log.info("export: removing left-over temporary file %s", leftover)
        leftover.unlink(missing_ok=True)


@contextlib.contextmanager
def _snapshot(warehouse_uri: str) -> Iterator[psycopg.Connection]:
    with psycopg.connect(warehouse_uri, application_name="pacbook-export") as conn:
        conn.execute("set session characteristics as transaction isolation level repeatable read, read only")
        conn.execute("set timezone = 'UTC'")
        conn.commit()
        with conn.transaction():
            yield conn


def export_marts(
    warehouse_uri: str,
    export_dir: Path,
    *,
    run_id: str | None = None,
    run_date: dt.date | None = None,
) -> dict[str, int]:
    """Exports every mart to Parquet and one DuckDB file under ``export_dir``; returns rows per mart.

    ``run_id`` and ``run_date`` (the Airflow run and its data date) are only recorded in the manifest.
    """
    export_dir = Path(export_dir)
    parquet_dir = export_dir / PARQUET_DIR
    parquet_dir.mkdir(parents=True, exist_ok=True)
    _remove_leftovers(export_dir)
    _remove_leftovers(parquet_dir)
    token = uuid.uuid4().hex[:12]
    staged: list[tuple[Path, Path]] = []  # (temporary, published)
    rows: dict[str, int] = {}
    manifest_marts: dict[str, dict] = {}
    try:
        with _snapshot(warehouse_uri) as conn:
            marts = list_marts(conn)
            if not marts:
                raise ExportError(f"export: schema {MARTS_SCHEMA!r} holds no table or view; run dbt first")
            parquet_files: dict[str, Path] = {}
            for mart in marts:
                columns = _columns(conn, MARTS_SCHEMA, mart)
                _decide_types(conn, MARTS_SCHEMA, mart, columns)
                published = parquet_dir / f"{mart}.parquet"
                temporary = _temporary_name(published, token)
                staged.append((temporary, published))
                rows[mart] = _write_parquet(conn, mart, columns, temporary)
                parquet_files[mart] = temporary
                manifest_marts[mart] = {
                    "rows": rows[mart],
                    "parquet": f"{PARQUET_DIR}/{mart}.parquet",
                    "columns": [
                        {"name": c.name, "postgres_type": c.pg_type, "parquet_type": str(c.arrow_type)} for c in columns
                    ],
                }
                log.info("export mart=%s rows=%d", mart, rows[mart])
        duckdb_published = export_dir / DUCKDB_FILE
        duckdb_temporary = _temporary_name(duckdb_published, token)
        staged.append((duckdb_temporary, duckdb_published))
        _build_duckdb(duckdb_temporary, parquet_files, rows)
        manifest = {
            "exported_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "run_id": run_id,
            "run_date": run_date.isoformat() if run_date else None,
            "source_schema": MARTS_SCHEMA,
            "duckdb": DUCKDB_FILE,
            "marts": manifest_marts,
        }
        manifest_published = export_dir / MANIFEST_FILE
        manifest_temporary = _temporary_name(manifest_published, token)
        staged.append((manifest_temporary, manifest_published))
        manifest_temporary.write_text(json.dumps(manifest, indent=2) + "\n")
        # Everything is complete: publish, data files first and the manifest that describes them last.
        for temporary, published in staged:
            os.replace(temporary, published)
    finally:
        for temporary, _ in staged:
            temporary.unlink(missing_ok=True)
            temporary.with_name(temporary.name + ".wal").unlink(missing_ok=True)
    for stale in sorted(set(parquet_dir.glob("*.parquet")) - {parquet_dir / f"{m}.parquet" for m in rows}):
        log.info("export: removing %s (no longer a mart)", stale.name)
        stale.unlink()
    log.info("export: %d marts, %d rows -> %s", len(rows), sum(rows.values()), export_dir)
    return rows
