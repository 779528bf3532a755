"""The marts exported to Parquet and one DuckDB file: every mart, every row, exact sums, atomic replacement."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import duckdb
import psycopg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from include.pacbook import exports
from include.pacbook.exports import DUCKDB_FILE, export_marts
from tests.conftest import query_all, query_one
from tests.reports import BuiltWarehouse, build_warehouse

NUMERIC_TYPES = ("smallint", "integer", "bigint", "numeric", "real", "double precision")


@pytest.fixture(scope="module")
def warehouse(postgres, generated_source, tmp_path_factory) -> BuiltWarehouse:
    return build_warehouse(postgres, generated_source, tmp_path_factory.mktemp("dbt_exports"))


def marts_in_warehouse(uri: str) -> list[str]:
    rows = query_all(uri, "select table_name from information_schema.tables where table_schema = 'marts' order by 1")
    return [name for (name,) in rows]


def numeric_columns(uri: str, mart: str) -> list[str]:
    rows = query_all(
        uri,
        """
        select column_name from information_schema.columns
        where table_schema = 'marts' and table_name = %s and data_type = any(%s)
        order by ordinal_position
        """,
        (mart, list(NUMERIC_TYPES)),
    )
    return [name for (name,) in rows]


def totals_in_warehouse(uri: str, mart: str) -> tuple:
    columns = numeric_columns(uri, mart)
    sums = "".join(f', sum("{c}")' for c in columns)
    return query_one(uri, f'select count(*){sums} from marts."{mart}"')


def totals_in_duckdb(db: duckdb.DuckDBPyConnection, relation: str, columns: list[str]) -> tuple:
    sums = "".join(f', sum("{c}")' for c in columns)
    return db.execute(f"select count(*){sums} from {relation}").fetchone()


def same_numbers(left: tuple, right: tuple) -> bool:
    return all(
        (a is None and b is None) or Decimal(str(a)) == Decimal(str(b)) for a, b in zip(left, right, strict=True)
    )


def leftovers(export_dir: Path) -> list[Path]:
    return [p for p in export_dir.rglob("*") if ".tmp-" in p.name or p.name.endswith(".wal")]


def test_every_mart_is_exported_with_every_row_and_exact_sums(warehouse, tmp_path):
    export_dir = tmp_path / "exports"
    rows = export_marts(warehouse.uri, export_dir, run_id="export_test", run_date=warehouse.forecast_run)

    marts = marts_in_warehouse(warehouse.uri)
    assert {"monthly_sales", "daily_sales", "sales_forecast", "sales_forecast_backtest"} <= set(marts)
    assert sorted(rows) == marts
    assert sorted(p.stem for p in (export_dir / "parquet").glob("*.parquet")) == marts
    with duckdb.connect(str(export_dir / DUCKDB_FILE), read_only=True) as db:
        tables = [name for (name,) in db.execute("select table_name from duckdb_tables() order by 1").fetchall()]
        (tags,) = db.execute("select tags from duckdb_databases() where database_name = 'pacbook_marts'").fetchone()
        assert tags == {"storage_version": "v1.0.0+"}  # readable by every DuckDB from 1.0 on
        assert tables == marts
        for mart in marts:
            expected = totals_in_warehouse(warehouse.uri, mart)
            assert expected[0] == rows[mart] > 0, mart
            columns = numeric_columns(warehouse.uri, mart)
            parquet = f"read_parquet('{export_dir / 'parquet' / (mart + '.parquet')}')"
            assert same_numbers(totals_in_duckdb(db, parquet, columns), expected), f"{mart}: Parquet differs"
            assert same_numbers(totals_in_duckdb(db, f'"{mart}"', columns), expected), f"{mart}: DuckDB differs"

        # A whole mart, row for row and value for value (dates stay dates, money stays exact).
        exported = db.execute("select * from monthly_sales order by month").fetchall()
    assert exported == query_all(warehouse.uri, "select * from marts.monthly_sales order by month")
    assert not leftovers(export_dir)

    manifest = json.loads((export_dir / "manifest.json").read_text())
    assert manifest["run_id"] == "export_test" and manifest["run_date"] == warehouse.forecast_run.isoformat()
    assert {mart: entry["rows"] for mart, entry in manifest["marts"].items()} == rows
    forecast_columns = {c["name"]: c["parquet_type"] for c in manifest["marts"]["sales_forecast"]["columns"]}
    assert forecast_columns["forecast"] == "decimal128(14, 2)" and forecast_columns["month"] == "date32[day]"


def test_types_are_preserved(warehouse, tmp_path):
    export_marts(warehouse.uri, tmp_path)
    schema = pq.read_schema(tmp_path / "parquet" / "daily_sales.parquet")
    assert schema.field("date").type == pa.date32()
    assert schema.field("date_key").type == pa.int32()
    assert schema.field("orders").type == pa.int64()
    assert pa.types.is_decimal(schema.field("gross_revenue").type) and schema.field("gross_revenue").type.scale == 2
    repeat = pq.read_schema(tmp_path / "parquet" / "customer_repeat_orders.parquet")
    assert repeat.field("first_order_at").type == pa.timestamp("us")
    assert repeat.field("first_order_at").metadata == {b"postgres_type": b"timestamp without time zone"}
    forecast = pq.read_schema(tmp_path / "parquet" / "sales_forecast.parquet")
    assert forecast.field("lower_80").type == pa.decimal128(14, 2)
    assert forecast.field("measure").type == pa.string()


def test_rows_are_streamed_in_batches(warehouse, tmp_path, monkeypatch):
    """A small batch size gives many row groups and the same data: the export never holds a whole mart."""
    monkeypatch.setattr(exports, "BATCH_ROWS", 100)
    rows = export_marts(warehouse.uri, tmp_path)
    parquet = pq.ParquetFile(tmp_path / "parquet" / "daily_sales.parquet")
    assert rows["daily_sales"] > 300
    assert parquet.metadata.num_row_groups == -(-rows["daily_sales"] // 100)
    assert parquet.metadata.num_rows == rows["daily_sales"]


def test_a_new_export_replaces_the_files_atomically(warehouse, tmp_path, monkeypatch):
    first = export_marts(warehouse.uri, tmp_path)
    parquet_path = tmp_path / "parquet" / "monthly_sales.parquet"
    duckdb_path = tmp_path / DUCKDB_FILE
    before = {p: p.stat().st_ino for p in (parquet_path, duckdb_path)}

    # A reader holding the old files open keeps reading complete, consistent data through the swap.
    with parquet_path.open("rb") as old_parquet, duckdb.connect(str(duckdb_path), read_only=True) as old_db:
        second = export_marts(warehouse.uri, tmp_path)
        assert pq.read_table(old_parquet).num_rows == first["monthly_sales"]
        assert old_db.execute("select count(*) from monthly_sales").fetchone()[0] == first["monthly_sales"]
    assert second == first
    assert all(p.stat().st_ino != inode for p, inode in before.items()), "files were rewritten in place"
    assert not leftovers(tmp_path)

    # An export that fails half-way leaves the last good export untouched and no temporary files.
    published = {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in tmp_path.rglob("*") if p.is_file()}

    def broken_duckdb(*args, **kwargs):
        raise exports.ExportError("disk full (simulated)")

    monkeypatch.setattr(exports, "_build_duckdb", broken_duckdb)
    with pytest.raises(exports.ExportError, match="simulated"):
        export_marts(warehouse.uri, tmp_path)
    assert {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in tmp_path.rglob("*") if p.is_file()} == published
    assert not leftovers(tmp_path)


def test_views_are_exported_and_dropped_marts_disappear(warehouse, tmp_path):
    with psycopg.connect(warehouse.uri, autocommit=True) as conn:
        conn.execute("create view marts.files_out_probe as select month, gross_revenue from marts.monthly_sales")
    try:
        rows = export_marts(warehouse.uri, tmp_path)
        assert rows["files_out_probe"] == rows["monthly_sales"]
        assert (tmp_path / "parquet" / "files_out_probe.parquet").exists()
    finally:
        with psycopg.connect(warehouse.uri, autocommit=True) as conn:
            conn.execute("drop view marts.files_out_probe")
    rows = export_marts(warehouse.uri, tmp_path)
    assert "files_out_probe" not in rows
    assert not (tmp_path / "parquet" / "files_out_probe.parquet").exists()
    with duckdb.connect(str(tmp_path / DUCKDB_FILE), read_only=True) as db:
        assert db.execute("select count(*) from duckdb_tables() where table_name = 'files_out_probe'").fetchone() == (
            0,
        )
