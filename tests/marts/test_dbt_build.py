"""`dbt build` of the whole project, run by the dbt CLI against a warehouse filled by the Luigi extraction:
every model builds and every dbt test (data tests, unit tests, reconciliation tests) passes."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from include.luigi_tasks.extract_source import extract_source
from include.pacbook.dbt_cli import dbt_command, dbt_env
from tests.conftest import query_one


def run_dbt_cli(
    warehouse_uri: str, target_dir: Path, *args: str, unit_tests: bool = False
) -> subprocess.CompletedProcess:
    """The dbt CLI on the project with its env-var profile, writing into a private target folder; with
    ``unit_tests``, dbt's unit tests are in what it runs (a production run leaves them out)."""
    env = dbt_env(warehouse_uri, unit_tests=unit_tests)  # with the PII key in its sessions, as the nightly run's dbt
    command = dbt_command(*args, target=target_dir, log_path=target_dir / "logs")
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)


def dbt_build(warehouse_uri: str, target_dir: Path, *extra: str, unit_tests: bool = False) -> dict:
    result = run_dbt_cli(warehouse_uri, target_dir, "build", *extra, unit_tests=unit_tests)
    results = json.loads((target_dir / "run_results.json").read_text())
    failures = [
        r["unique_id"] + ": " + str(r.get("message"))
        for r in results["results"]
        if r["status"] not in ("success", "pass", "warn")
    ]
    assert result.returncode == 0 and not failures, result.stdout[-5000:] + "\n".join(failures)
    return results


@pytest.mark.parametrize("source_name", ["generated_source", "real_source"])
def test_dbt_build_passes_all_its_tests(request, postgres, monkeypatch, tmp_path, source_name):
    source = request.getfixturevalue(source_name)
    warehouse = postgres.fresh_database("warehouse_dbt")
    monkeypatch.setenv("AIRFLOW_CONN_PACBOOK_SOURCE", source)
    monkeypatch.setenv("AIRFLOW_CONN_PACBOOK_WAREHOUSE", warehouse)
    extract_source("dbt_build_test")

    results = dbt_build(warehouse, tmp_path / "target", unit_tests=True)
    kinds = {r["unique_id"].split(".")[0] for r in results["results"]}
    assert {"model", "test", "snapshot", "unit_test"} <= kinds
    assert query_one(warehouse, "select count(*), sum(sales_amount) from dwh.fct_sales") == query_one(
        source, "select count(*), sum(price) from public.order_line"
    )
    # A second build on unchanged data passes again and the snapshot takes no new version; built as
    # production builds (config.DBT_PRODUCTION_ENV), it runs no unit test.
    again = dbt_build(warehouse, tmp_path / "target")
    assert not [r["unique_id"] for r in again["results"] if r["unique_id"].startswith("unit_test.")]
    assert {r["unique_id"].split(".")[0] for r in again["results"]} >= {"model", "test"}
    assert query_one(warehouse, "select count(*) from dwh.dim_customer where not is_current")[0] == 0
    if source_name == "real_source":
        assert_docs_generate(warehouse, tmp_path / "docs")
    else:
        assert_the_contracted_models_keep_their_contract(warehouse, tmp_path / "target" / "manifest.json")
        # dbt's sessions carry the project's session settings (config.DBT_SESSION_SETTINGS): no JIT.
        shown = run_dbt_cli(
            warehouse,
            tmp_path / "target",
            "show",
            "--inline",
            "select current_setting('jit') as jit",
            "--output",
            "json",
        )
        assert shown.returncode == 0 and '"jit": "off"' in shown.stdout, shown.stdout[-2000:]


def assert_docs_generate(warehouse_uri: str, target_dir: Path) -> None:
    """`dbt docs generate` writes a static site with the catalog of every warehouse table."""
    result = run_dbt_cli(warehouse_uri, target_dir, "docs", "generate", "--static")
    assert result.returncode == 0, result.stdout[-3000:]
    catalog = json.loads((target_dir / "catalog.json").read_text())
    assert "model.pacbook.fct_sales" in catalog["nodes"]
    assert (target_dir / "static_index.html").stat().st_size > 100_000


def assert_the_contracted_models_keep_their_contract(warehouse_uri: str, manifest_path: Path) -> None:
    """Every mart and fact is built to its declared contract: the columns and exact types of its YAML,
    NOT NULL on exactly the columns whose `not_null` constraint replaced a test node, and the primary
    keys, unique and check constraints that replaced the unique, accepted-values and range tests."""
    manifest = json.loads(manifest_path.read_text())
    models = [n for n in manifest["nodes"].values() if n["resource_type"] == "model"]
    contracted = [n for n in models if n["contract"]["enforced"]]
    expected = {n["name"] for n in models if n["fqn"][1] == "marts"} | {
        "fct_sales",
        "fct_order_fulfilment",
        "fct_customer_monthly",
    }
    assert {n["name"] for n in contracted} == expected
    declared = {
        (n["schema"], n["name"], column["name"]): (
            column["data_type"],
            any(c["type"] == "not_null" for c in column["constraints"]),
        )
        for n in contracted
        for column in n["columns"].values()
    }
    with psycopg.connect(warehouse_uri) as conn:
        built = {
            (schema, table, column): (data_type, not_null)
            for schema, table, column, data_type, not_null in catalog_rows(
                conn,
                "select n.nspname, c.relname, a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull"
                " from pg_attribute as a join pg_class as c on c.oid = a.attrelid",
                "a.attnum > 0 and not a.attisdropped",
                contracted,
            )
        }
        assert built == declared
        assert sum(not_null for _, not_null in declared.values()) >= 90
        with pytest.raises(psycopg.errors.NotNullViolation):
            conn.execute("insert into marts.monthly_sales (month) values (null)")
    assert_the_key_and_check_constraints_hold(warehouse_uri, contracted)


def catalog_rows(conn, select_from: str, condition: str, models: list[dict], tail: str = "") -> list[tuple]:
    """Rows of a catalog query (its relation aliased ``c``) on the models' tables only."""
    models_only = "(n.nspname, c.relname) in (select * from unnest(%s::text[], %s::text[]))"
    return conn.execute(
        f"{select_from} join pg_namespace as n on n.oid = c.relnamespace where {condition} and {models_only}{tail}",
        ([m["schema"] for m in models], [m["name"] for m in models]),
    ).fetchall()


CONSTRAINT_KINDS = {"primary_key": "p", "unique": "u", "check": "c"}


def assert_the_key_and_check_constraints_hold(warehouse_uri: str, contracted: list[dict]) -> None:
    """The built tables carry exactly the declared primary key, unique and check constraints (by the
    columns they cover; a check also by its expression, as PostgreSQL normalises it), and PostgreSQL
    refuses a row that breaks one."""
    declared = set()
    for node in contracted:
        on_the_model = [(c, c["columns"]) for c in node["constraints"]]
        on_a_column = [(c, [column["name"]]) for column in node["columns"].values() for c in column["constraints"]]
        for constraint, columns in on_the_model + on_a_column:
            kind = CONSTRAINT_KINDS.get(constraint["type"])
            if kind:
                check = normalised_check(warehouse_uri, node, constraint["expression"]) if kind == "c" else None
                declared.add((node["name"], kind, frozenset(columns), check))
    with psycopg.connect(warehouse_uri) as conn:
        built = {
            (table, kind, frozenset(columns), definition if kind == "c" else None)
            for table, kind, columns, definition in catalog_rows(
                conn,
                "select c.relname, k.contype::text, array_agg(a.attname::text order by a.attname),"
                " pg_get_constraintdef(k.oid)"
                " from pg_constraint as k join pg_class as c on c.oid = k.conrelid"
                " join pg_attribute as a on a.attrelid = c.oid and a.attnum = any(k.conkey)",
                "k.contype in ('p', 'u', 'c')",
                contracted,
                " group by c.relname, k.oid, k.contype",
            )
        }
        assert built == declared
        assert len({table for table, kind, _, _ in declared if kind == "p"}) == 12  # every mart and two facts
        assert len([kind for _, kind, _, _ in declared if kind == "c"]) == 11
        month = conn.execute("select month from marts.monthly_sales limit 1").fetchone()[0]
        with pytest.raises(psycopg.errors.UniqueViolation), conn.transaction():
            conn.execute(
                "insert into marts.monthly_sales (month, gross_revenue, net_revenue) values (%s, 0, 0)", (month,)
            )
        with pytest.raises(psycopg.errors.CheckViolation), conn.transaction():
            conn.execute(
                "update marts.customer_segments set value_tier = 'Platinum' where customer_id = "
                "(select min(customer_id) from marts.customer_segments)"
            )


def normalised_check(warehouse_uri: str, node: dict, expression: str) -> str:
    """A declared check expression as PostgreSQL writes it back, added to an empty copy of the model's table."""
    with psycopg.connect(warehouse_uri) as conn, conn.transaction():
        conn.execute(
            sql.SQL("create temporary table probe (like {}) on commit drop").format(
                sql.Identifier(node["schema"], node["name"])
            )
        )
        conn.execute(sql.SQL("alter table probe add check ({})").format(sql.SQL(expression)))
        return conn.execute(
            "select pg_get_constraintdef(oid) from pg_constraint where conrelid = 'probe'::regclass and contype = 'c'"
        ).fetchone()[0]
