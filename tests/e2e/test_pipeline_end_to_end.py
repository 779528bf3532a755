"""The whole pipeline on real Airflow components (scheduler, dag-processor, triggerer, api-server).

Each scenario points the `pacbook_source` / `pacbook_warehouse` connections (kept in Airflow's own
store) at fresh databases, triggers the DAG through the REST API and asserts on the data.
"""

from __future__ import annotations

import datetime as dt
import time

import duckdb
import psycopg
import pytest

from include.pacbook import config
from include.pacbook.airflow_stack import AirflowStack
from include.pacbook.smtp_sink import read_messages
from tests.conftest import TEST_STATE, query_all, query_one
from tests.e2e.conftest import E2E_ROLES, MAILBOX

pytestmark = pytest.mark.e2e


def wait_for_mail(predicate, timeout: float = 90) -> list:
    deadline = time.monotonic() + timeout
    while True:
        found = [message for message in read_messages(MAILBOX) if predicate(message)]
        if found or time.monotonic() > deadline:
            return found
        time.sleep(2)


def run_pipeline(stack: AirflowStack, source: str, warehouse: str, conf: dict | None = None) -> dict:
    stack.set_connection(config.SOURCE_CONN_ID, source)
    stack.set_connection(config.WAREHOUSE_CONN_ID, warehouse)
    return stack.run_latest_interval(config.DAG_ID, conf, timeout=900)


def night_of(run: dict) -> str:
    """The day a run's reports cover: its data interval's start; a manual run without an interval
    covers the day before it was triggered (dags/pacbook_warehouse.py, _interval)."""
    if run.get("data_interval_start"):
        return run["data_interval_start"][:10]
    run_after = dt.datetime.fromisoformat(run["run_after"].replace("Z", "+00:00"))
    return f"{run_after - dt.timedelta(days=1):%Y-%m-%d}"


def task_states(stack: AirflowStack, run: dict) -> dict[str, str]:
    return {ti["task_id"]: ti["state"] for ti in stack.task_instances(config.DAG_ID, run["dag_run_id"])}


def failed_tasks(stack: AirflowStack, run: dict) -> list[str]:
    return [
        f"{ti['task_id']}={ti['state']}"
        for ti in stack.task_instances(config.DAG_ID, run["dag_run_id"])
        if ti["state"] != "success"
    ]


def warehouse_fingerprint(uri: str) -> dict[str, tuple]:
    tables = query_all(
        uri,
        "select table_schema, table_name from information_schema.tables "
        "where table_schema in ('staging', 'dwh', 'marts') and table_type = 'BASE TABLE' order by 1, 2",
    )
    fingerprint = {}
    with psycopg.connect(uri) as conn:
        for schema, table in tables:
            name = psycopg.sql.SQL("{}.{}").format(psycopg.sql.Identifier(schema), psycopg.sql.Identifier(table))
            fingerprint[f"{schema}.{table}"] = conn.execute(
                psycopg.sql.SQL("select count(*) from {}").format(name)
            ).fetchone()
    return fingerprint


def assert_the_run_reconciled(airflow, run: dict) -> None:
    """The run's own `reconcile` task compared the source with the warehouse, for its interval and all
    time (a dbt_select run that left models behind staging would have skipped the comparison)."""
    compared = airflow.xcom(config.DAG_ID, run["dag_run_id"], "reconcile")
    assert {(key.split(" [")[0], key.split("[")[1].split(" ")[0]) for key in compared} == {
        (measure, window) for measure in ("order lines", "sales amount", "orders") for window in ("interval", "all")
    }, compared


def assert_warehouse_reconciles_to_source(source: str, warehouse: str) -> None:
    # Every order line, to the cent.
    assert query_one(warehouse, "select count(*), sum(sales_amount) from dwh.fct_sales") == query_one(
        source, "select count(*), sum(price) from public.order_line"
    )
    # Every source customer has exactly one current version.
    customers = query_one(source, "select count(*) from public.customer")[0]
    current = query_all(
        warehouse, "select customer_id, count(*) from dwh.dim_customer where is_current group by customer_id"
    )
    assert len(current) == customers
    assert all(n == 1 for _, n in current)
    # Monthly sales, computed here from the source by the contract's definitions, independently of dbt.
    expected = query_all(
        source,
        """
        with latest_status as (
            select distinct on (h.order_id) h.order_id, s.status_value
            from public.order_history h
            join public.order_status s on s.status_id = h.status_id
            order by h.order_id, h.status_date desc, h.history_id desc
        )
        select date_trunc('month', o.order_date)::date as month,
               count(distinct o.order_id) as orders,
               count(l.line_id) as books_sold,
               sum(l.price) as gross_revenue,
               coalesce(sum(l.price) filter (
                   where ls.status_value is null or ls.status_value not in ('Cancelled', 'Returned')), 0
               ) as net_revenue,
               count(distinct o.customer_id) as customers
        from public.cust_order o
        join public.order_line l on l.order_id = o.order_id
        left join latest_status ls on ls.order_id = o.order_id
        group by 1
        order by 1
        """,
    )
    actual = query_all(
        warehouse,
        "select month, orders, books_sold, gross_revenue, net_revenue, customers from marts.monthly_sales order by 1",
    )
    assert actual == expected


def test_generated_source_runs_green_reconciles_and_reruns_identically(airflow, nightly_run, generated_source):
    first, warehouse = nightly_run
    assert first["state"] == "success", failed_tasks(airflow, first)
    assert_warehouse_reconciles_to_source(generated_source, warehouse)
    # The run took longer than the test's deadline: the triggerer sent the deadline alert.
    late = wait_for_mail(lambda m: "missed its deadline" in m["Subject"] and first["dag_run_id"] in m.get_content())
    assert late, [m["Subject"] for m in read_messages(MAILBOX)]
    assert "Runbook: RUNBOOK.md#deadline-missed" in late[0].get_content()
    # The audit listener recorded every task's outcome, with the rows the extraction copied.
    extract_rows = query_one(
        warehouse,
        "select state, rows from audit.task_run where run_id = %s and task_id = 'extract'",
        (first["dag_run_id"],),
    )
    assert extract_rows == (
        "success",
        query_one(
            warehouse, "select sum(rows_loaded) from audit.extract_load where run_id = %s", (first["dag_run_id"],)
        )[0],
    )
    assert (
        query_one(
            warehouse,
            "select count(*) from audit.task_run where run_id = %s and state = 'success'",
            (first["dag_run_id"],),
        )[0]
        >= 30
    )
    # The run's own record: finished, successful, every source row read and none rejected.
    run_row = query_one(
        warehouse,
        "select status, finished_at is not null, rows_read, rows_written, rows_rejected, rows_by_table->'order_line' "
        "from audit.pipeline_run where run_id = %s",
        (first["dag_run_id"],),
    )
    source_rows = query_one(generated_source, "select count(*) from order_line")[0]
    assert run_row[:2] == ("success", True) and run_row[4] == 0 and run_row[2] == run_row[3] > 0
    assert run_row[5] == {"read": source_rows, "written": source_rows, "rejected": 0}
    # Published after the reconciliation: the day's report exists (the exports are checked after the
    # second run below: other tests' runs since this one wrote their own exports to the same folder).
    report_day = night_of(first)
    assert (TEST_STATE / "reports" / report_day / "daily.html").stat().st_size > 0
    assert (TEST_STATE / "reports" / "dbt_docs" / "index.html").stat().st_size > 0
    before = warehouse_fingerprint(warehouse)
    sums_before = query_one(warehouse, "select sum(gross_revenue), sum(net_revenue) from marts.monthly_sales")

    # The second run is a full refresh from the trigger form: every table reloaded, every model rebuilt.
    second = run_pipeline(airflow, generated_source, warehouse, {"full_refresh": True})
    assert second["state"] == "success", failed_tasks(airflow, second)
    fact_log = airflow.task_log(config.DAG_ID, second["dag_run_id"], "dwh.fct_sales_model_build", 1)
    assert "--full-refresh" in fact_log
    # The night's date reaches the snapshot through the environment, not a var, so the parse saved by
    # the first run's tasks still holds: dbt parses only what changed (macros/snapshot_get_time.sql).
    assert "Unable to do partial parsing" not in fact_log, fact_log[-3000:]
    # The tasks were forked from executor workers that had dbt and Cosmos imported already.
    scheduler_log = (airflow.log_dir / "scheduler.log").read_text(errors="replace")
    assert "Set forkserver preload modules for scheduler" in scheduler_log
    assert warehouse_fingerprint(warehouse) == before
    assert query_one(warehouse, "select sum(gross_revenue), sum(net_revenue) from marts.monthly_sales") == sums_before
    # The snapshot saw no change, so no customer gained a version.
    assert query_one(warehouse, "select count(*) from dwh.dim_customer where not is_current")[0] == 0
    # The analysts' copy, written after this run's reconciliation, equals the mart.
    with duckdb.connect(str(TEST_STATE / "exports" / "pacbook_marts.duckdb"), read_only=True) as copy:
        exported = copy.execute("select count(*), sum(gross_revenue) from monthly_sales").fetchone()
    assert exported == query_one(warehouse, "select count(*), sum(gross_revenue) from marts.monthly_sales")

    # A third, plain night with nothing new but the night's (empty) order copies: state-aware builds
    # rebuild what reads the orders; the other dbt tasks end at once without running dbt. A deploy
    # changed an incremental model since: that one is rebuilt from scratch.
    with psycopg.connect(warehouse) as conn:
        conn.execute(
            "update audit.dbt_node_build set fingerprint = 'older code' "
            "where unique_id = 'model.pacbook.fct_customer_monthly'"
        )
    third = run_pipeline(airflow, generated_source, warehouse)
    assert third["state"] == "success", failed_tasks(airflow, third)
    states = task_states(airflow, third)
    for task in ("staging.stg_pacbook__cust_order", "dwh.fct_sales", "dwh.fct_order_fulfilment", "marts.monthly_sales"):
        assert states[f"{task}_model_build"] == "success", task
    for task in ("dwh.dim_book_model", "dwh.snap_pacbook__customers_snapshot", "staging.stg_pacbook__book_model"):
        assert states[f"{task}_build"] == "success", task
        log = airflow.task_log(config.DAG_ID, third["dag_run_id"], f"{task}_build", 1)
        assert "is up to date: built at" in log and "Running with dbt" not in log, log[-2000:]
    fact_log = airflow.task_log(config.DAG_ID, third["dag_run_id"], "dwh.fct_sales_model_build", 1)
    assert "fct_sales is rebuilt: stg_pacbook__" in fact_log or "fct_sales is rebuilt: int_orders" in fact_log
    assert "--full-refresh" not in fact_log
    monthly_log = airflow.task_log(config.DAG_ID, third["dag_run_id"], "dwh.fct_customer_monthly_model_build", 1)
    assert "every row is rebuilt" in monthly_log and "--full-refresh" in monthly_log, monthly_log[-3000:]
    assert all(states[task] == "success" for task in ("forecast", "reconcile", "export_marts", "finish_run"))
    # The tests no node task runs (on sources, across sibling models) ran at the end of their layer.
    for layer, tests in (("staging", 39), ("dwh", 1)):
        assert states[f"{layer}.layer_tests"] == "success"
        layer_log = airflow.task_log(config.DAG_ID, third["dag_run_id"], f"{layer}.layer_tests", 1)
        assert f"PASS={tests} WARN=0 ERROR=0" in layer_log, layer_log[-3000:]
        assert "Unable to do partial parsing" not in layer_log, layer_log[-3000:]
    assert warehouse_fingerprint(warehouse) == before


def test_no_task_log_of_the_run_shows_a_secret(airflow, nightly_run, generated_source):
    """Every try of every task of the nightly run, as the UI shows its log: neither server's password
    nor the PII key appears (Airflow masks what the connections hold; dbt gets the key in PGOPTIONS)."""
    run, warehouse = nightly_run
    secrets_given = {
        "the warehouse password": config.connection_parts(warehouse).password,
        "the source password": config.connection_parts(generated_source).password,
        "the PII key": config.pii_encryption_key(),
    }
    secrets_given = {name: value for name, value in secrets_given.items() if value}
    assert "the PII key" in secrets_given and "the warehouse password" in secrets_given, "nothing would be proven"
    tries = [
        (ti["task_id"], attempt)
        for ti in airflow.task_instances(config.DAG_ID, run["dag_run_id"])
        if ti["state"] not in ("skipped", None)
        for attempt in range(1, ti["try_number"] + 1)
    ]
    assert len(tries) >= 30
    for task_id, attempt in tries:
        log = airflow.task_log(config.DAG_ID, run["dag_run_id"], task_id, attempt)
        assert log, f"{task_id} try {attempt} has no log: nothing would be proven"
        leaked = [name for name, value in secrets_given.items() if value in log]
        assert not leaked, f"{task_id} try {attempt} shows {leaked}"


def test_each_part_of_the_run_worked_as_its_role(airflow, nightly_run):
    """The warehouse connection gives a superuser's login, and the project's roles are granted on the
    warehouse: each part of the run still worked as its role (session_roles.py). What it built belongs
    to that role, so dbt could not have written staging, nor the extraction dwh; its log says so."""
    run, warehouse = nightly_run
    assert run["state"] == "success", failed_tasks(airflow, run)
    loader, transformer = E2E_ROLES.loader, E2E_ROLES.transformer
    expected = {
        ("staging", "r"): loader,
        ("staging", "v"): transformer,
        ("audit", "r"): loader,
        ("quarantine", "r"): loader,
        ("dwh", "r"): transformer,
        ("dwh", "v"): transformer,
        ("marts", "r"): transformer,
        ("marts", "v"): transformer,
    }
    owners = query_all(
        warehouse,
        """
        select n.nspname, c.relkind::text, pg_get_userbyid(c.relowner), count(*)
        from pg_class as c join pg_namespace as n on n.oid = c.relnamespace
        where n.nspname in ('staging', 'audit', 'quarantine', 'dwh', 'marts') and c.relkind in ('r', 'v')
        group by 1, 2, 3 order by 1, 2, 3
        """,
    )
    wrong = [row for row in owners if expected.get((row[0], row[1])) != row[2]]
    assert not wrong, f"(schema, kind, owner, relations) not owned by their part's role: {wrong}"
    assert {("staging", "r"), ("staging", "v"), ("audit", "r"), ("dwh", "r"), ("marts", "r")} <= {
        (schema, kind) for schema, kind, _, _ in owners
    }
    assert (
        query_one(
            warehouse, "select pg_get_userbyid(relowner) from pg_class where oid = 'marts.sales_forecast'::regclass"
        )[0]
        == transformer
    )
    for task_id, said in (
        ("extract", f"loading the warehouse as role {loader} (login "),
        ("reconcile", f"transforming the warehouse as role {transformer} (login "),
        ("export_marts", f"reading the marts as role {E2E_ROLES.bi_reader} (login "),
    ):
        log = airflow.task_log(config.DAG_ID, run["dag_run_id"], task_id, 1)
        assert said in log, f"{task_id}: {log[-2000:]}"


def test_real_pacbook_data_reconciles(airflow, postgres, real_source):
    warehouse = postgres.fresh_database("warehouse_real")
    run = run_pipeline(airflow, real_source, warehouse)
    assert run["state"] == "success", failed_tasks(airflow, run)
    assert_warehouse_reconciles_to_source(real_source, warehouse)
    assert query_one(warehouse, "select count(*), sum(sales_amount) from dwh.fct_sales")[0] == 15_400
    assert query_one(warehouse, "select count(*) from dwh.dim_book")[0] == 11_127
    # The forecast task wrote 6 months for both measures, each with its interval, and its backtest.
    forecast = query_all(
        warehouse,
        "select measure, count(*), bool_and(lower_80 <= forecast and forecast <= upper_80) "
        "from marts.sales_forecast group by measure order by measure",
    )
    assert forecast == [("gross_revenue", 6, True), ("quantity", 6, True)]
    methods = query_all(warehouse, "select measure, method, origins from marts.sales_forecast_backtest order by 1, 2")
    assert methods == [(m, k, 12) for m in ("gross_revenue", "quantity") for k in ("model", "seasonal_naive")]


def test_a_missing_source_table_fails_the_extract_task_and_its_log_names_the_table(airflow, postgres, generated_source):
    broken = postgres.fresh_database("source_missing_table")
    with psycopg.connect(generated_source) as src, psycopg.connect(broken) as dst:
        dst.execute("create table public.cust_order (order_id integer primary key, order_date timestamp)")
        dst.execute("insert into public.cust_order values (1, '2024-01-01 10:00')")
        dst.commit()
        assert src
    warehouse = postgres.fresh_database("warehouse_missing_table")
    run = run_pipeline(airflow, broken, warehouse)
    assert run["state"] == "failed"
    states = {ti["task_id"]: ti for ti in airflow.task_instances(config.DAG_ID, run["dag_run_id"])}
    assert states["source_ready"]["state"] == "success"
    assert states["extract"]["state"] == "failed"
    assert states["extract"]["try_number"] == 1  # a missing table is not retried: a retry cannot fix it
    assert all(ti["state"] == "upstream_failed" for tid, ti in states.items() if "." in tid)
    log = airflow.task_log(config.DAG_ID, run["dag_run_id"], "extract", 1)
    assert "source table public.order_history does not exist" in log
    # the on-call engineer's first read: the last line says what failed, which table, and where to look
    last_line = log.strip().splitlines()[-1]
    assert "ExtractionFailedError" in last_line and "order_history" in last_line, log.strip().splitlines()[-5:]
    assert last_line.endswith("RUNBOOK.md#extraction-failed")
    # The on-call engineer got one e-mail with everything needed to act.
    alerts = wait_for_mail(lambda m: "extract failed" in m["Subject"] and run["dag_run_id"] in m.get_content())
    assert alerts, [m["Subject"] for m in read_messages(MAILBOX)]
    body = alerts[0].get_content()
    for field in (
        f"DAG: {config.DAG_ID}",
        f"Run: {run['dag_run_id']}",
        "Task: extract",
        "Try: 1",
        "Cause: ExtractionFailedError",
        "order_history",  # the cause names the failed tables; the reasons follow in the log
        "SourceTableMissingError",
        "Log: http",
        "Runbook: RUNBOOK.md#extraction-failed",
    ):
        assert field in body, body


def test_an_unreachable_source_times_the_sensor_out_with_a_clear_message(airflow, postgres):
    warehouse = postgres.fresh_database("warehouse_unreachable_source")
    # Port 9 (discard) refuses connections: the database "does not answer".
    run = run_pipeline(airflow, "postgresql://pacbook:x@127.0.0.1:9/pacbook_source", warehouse)
    assert run["state"] == "failed"
    states = {ti["task_id"]: ti for ti in airflow.task_instances(config.DAG_ID, run["dag_run_id"])}
    assert states["source_ready"]["state"] == "failed"
    assert states["source_ready"]["try_number"] == 1  # the whole wait is spent: not retried
    log = airflow.task_log(config.DAG_ID, run["dag_run_id"], "source_ready", 1).strip().splitlines()
    # the on-call engineer's first read: the last line says what is wrong and where to look
    assert "source not ready after waiting" in log[-1] and "does not answer" in log[-1], log[-5:]
    assert "RUNBOOK.md#source-not-ready" in log[-1]
    alerts = wait_for_mail(lambda m: "source_ready failed" in m["Subject"] and run["dag_run_id"] in m.get_content())
    assert alerts and "Runbook: RUNBOOK.md#source-not-ready" in alerts[0].get_content()
    run_row = query_one(
        warehouse,
        "select status, failed_task, finished_at is not null from audit.pipeline_run where run_id = %s",
        (run["dag_run_id"],),
    )
    assert run_row == ("failed", "source_ready", True)


def test_dry_run_checks_the_source_and_writes_nothing(airflow, postgres, generated_source):
    warehouse = postgres.fresh_database("warehouse_dry_run")
    run = run_pipeline(airflow, generated_source, warehouse, {"dry_run": True})
    assert run["state"] == "success", failed_tasks(airflow, run)
    states = task_states(airflow, run)
    assert states["source_ready"] == "success"
    assert states["check_extraction"] == "success"
    assert states["extract"] == "skipped"
    assert all(state == "skipped" for task_id, state in states.items() if "." in task_id or task_id == "forecast")
    copied = query_one(
        warehouse,
        "select count(*) from information_schema.tables where table_schema = 'staging' and table_name = any(%s)",
        (list(config.SOURCE_TABLES),),
    )[0]
    assert copied == 0  # no source table was copied
    assert query_one(warehouse, "select count(*) from staging.publisher_book_costs")[0] == 0


def test_invalid_trigger_params_are_refused(airflow):
    from include.pacbook.airflow_stack import ApiError

    for conf in ({"dbt_select": "x; drop table dwh.fct_sales"}, {"full_refresh": "yes please"}):
        with pytest.raises(ApiError) as refused:
            airflow.trigger(config.DAG_ID, conf)
        assert refused.value.status in (400, 422), refused.value
