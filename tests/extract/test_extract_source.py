"""Luigi extraction on real PostgreSQL servers: complete, idempotent, atomic, loud when it fails."""

from __future__ import annotations

import psycopg
import pytest

from include.luigi_tasks.extract_source import ExtractionFailedError, extract_source
from include.luigi_tasks.streaming_copy import LOADED_AT_COLUMN
from include.pacbook import config
from tests.conftest import query_all, query_one


@pytest.fixture
def warehouse(postgres, generated_source, monkeypatch) -> str:
    uri = postgres.fresh_database("warehouse_extract")
    monkeypatch.setenv("AIRFLOW_CONN_PACBOOK_SOURCE", generated_source)
    monkeypatch.setenv("AIRFLOW_CONN_PACBOOK_WAREHOUSE", uri)
    return uri


def _staging_fingerprint(uri: str) -> dict[str, tuple]:
    fingerprint = {}
    with psycopg.connect(uri) as conn:
        for table in config.SOURCE_TABLES:
            fingerprint[table] = conn.execute(
                psycopg.sql.SQL(
                    "select count(*), md5(string_agg(r::text, '|' order by r::text)) "
                    "from (select to_jsonb(t) - {} as r from {}.{} t) as rows"
                ).format(
                    # when the row was loaded differs between two loads of the same rows
                    psycopg.sql.Literal(LOADED_AT_COLUMN),
                    psycopg.sql.Identifier("staging"),
                    psycopg.sql.Identifier(table),
                )
            ).fetchone()
    return fingerprint


def test_every_source_table_lands_in_staging_row_for_row(generated_source, warehouse):
    rows = extract_source("test_run_1")
    assert set(rows) == set(config.SOURCE_TABLES)
    for table in config.SOURCE_TABLES:
        source_count = query_one(generated_source, f"select count(*) from public.{table}")[0]
        assert rows[table] == source_count, table
    source_lines = query_one(generated_source, "select count(*), sum(price) from public.order_line")
    staged_lines = query_one(warehouse, "select count(*), sum(price) from staging.order_line")
    assert staged_lines == source_lines
    # Types are kept exactly (binary COPY): money stays numeric(5,2), timestamps stay naive.
    types = dict(
        query_all(
            warehouse,
            "select column_name, data_type from information_schema.columns "
            "where table_schema = 'staging' and table_name = 'cust_order'",
        )
    )
    assert types["order_date"] == "timestamp without time zone"


def test_rerun_of_the_same_run_skips_and_a_new_run_reloads_identically(warehouse):
    extract_source("test_run_1")
    first = _staging_fingerprint(warehouse)
    loaded_at = query_all(warehouse, "select table_name, finished_at from audit.extract_load order by 1")

    extract_source("test_run_1")  # same run: every table is recorded as done, nothing is copied
    assert query_all(warehouse, "select table_name, finished_at from audit.extract_load order by 1") == loaded_at

    extract_source("test_run_2")  # a new run copies everything again: same rows, no doubles
    assert _staging_fingerprint(warehouse) == first


def test_a_missing_source_table_fails_naming_it_and_the_rest_still_load(postgres, generated_source, monkeypatch):
    broken_source = postgres.fresh_database("source_broken")
    with psycopg.connect(generated_source) as src, psycopg.connect(broken_source) as dst:
        dst.execute("create table public.country (country_id integer primary key, country_name text)")
        dst.execute("insert into public.country values (1, 'Indonesia')")
        dst.commit()
        assert src  # the broken source has only `country`
    warehouse = postgres.fresh_database("warehouse_broken")
    monkeypatch.setenv("AIRFLOW_CONN_PACBOOK_SOURCE", broken_source)
    monkeypatch.setenv("AIRFLOW_CONN_PACBOOK_WAREHOUSE", warehouse)

    with pytest.raises(ExtractionFailedError) as failure:
        extract_source("test_run_broken", tables=("country", "cust_order"))
    assert "cust_order" in str(failure.value)
    assert "source table public.cust_order does not exist" in str(failure.value)
    assert query_one(warehouse, "select count(*) from staging.country")[0] == 1
    assert query_one(warehouse, "select count(*) from audit.extract_failure where table_name = 'cust_order'")[0] == 1


def test_an_added_column_loads_without_it_and_a_lost_column_keeps_the_previous_load(
    postgres, generated_source, monkeypatch
):
    source = postgres.fresh_database("source_drift")
    with psycopg.connect(source) as conn:
        conn.execute("create table public.publisher (publisher_id integer primary key, publisher_name text)")
        conn.execute("insert into public.publisher values (1, 'Gramedia'), (2, 'Mizan')")
        conn.commit()
    warehouse = postgres.fresh_database("warehouse_drift")
    monkeypatch.setenv("AIRFLOW_CONN_PACBOOK_SOURCE", source)
    monkeypatch.setenv("AIRFLOW_CONN_PACBOOK_WAREHOUSE", warehouse)
    extract_source("night_1", tables=("publisher",))

    with psycopg.connect(source) as conn:
        conn.execute("alter table public.publisher add column country text")
        conn.execute("insert into public.publisher values (3, 'Penguin', 'UK')")
        conn.commit()
    extract_source("night_2", tables=("publisher",))
    assert query_one(warehouse, "select count(*) from staging.publisher")[0] == 3
    assert query_all(warehouse, "select table_name, column_name, column_type from audit.source_schema_change") == [
        ("publisher", "country", "text")
    ]

    with psycopg.connect(source) as conn:
        conn.execute("alter table public.publisher drop column publisher_name")
        conn.execute("insert into public.publisher values (4, 'UK')")
        conn.commit()
    with pytest.raises(ExtractionFailedError, match=r"publisher.*no longer matches staging.publisher.*publisher_name"):
        extract_source("night_3", tables=("publisher",))
    assert query_one(warehouse, "select count(*) from staging.publisher")[0] == 3
