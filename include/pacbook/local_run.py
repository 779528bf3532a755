"""``make run``: one real run of the pacbook_warehouse DAG on this machine, then a one-screen summary.

Servers come from ``AIRFLOW_CONN_PACBOOK_SOURCE`` / ``AIRFLOW_CONN_PACBOOK_WAREHOUSE`` (and Airflow's
own ``AIRFLOW__DATABASE__SQL_ALCHEMY_CONN``); whatever is not given lives on the embedded PostgreSQL,
which this command starts and stops. A given source is only read; an embedded one is generated when
empty, and the embedded servers get the least-privilege roles and a PII key of their own
(docs/security.md).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import logging
import os
import signal
import sys
import time
from dataclasses import dataclass

import psycopg

from include.pacbook import config, embedded_postgres
from include.pacbook.airflow_stack import AirflowStack, airflow_env, migrate_metadata
from include.pacbook.privileges import apply_privileges, local_pii_key
from include.pacbook.smtp_sink import read_messages, running_smtp_sink

log = logging.getLogger("pacbook.run")


@dataclass(frozen=True)
class Servers:
    source_uri: str
    warehouse_uri: str
    metadata_uri: str
    embedded: embedded_postgres.EmbeddedServer | None
    pii_key: str

    @property
    def source_is_embedded(self) -> bool:
        return self.embedded is not None and not config.connections_given()

    def connection_env(self) -> dict[str, str]:
        return {
            "AIRFLOW_CONN_PACBOOK_SOURCE": self.source_uri,
            "AIRFLOW_CONN_PACBOOK_WAREHOUSE": self.warehouse_uri,
            # the Airflow components read the key as the pacbook_pii_key connection, like in production
            f"AIRFLOW_CONN_{config.PII_KEY_CONN_ID.upper()}": json.dumps(
                {"conn_type": "generic", "password": self.pii_key}
            ),
        }


def resolve_pii_key() -> str:
    """The embedded warehouse's key lives beside its data in the state folder (generated on first use,
    gone with `make clean`); a warehouse given from outside needs its own key, or the run stops here."""
    if config.connections_given():
        return config.pii_encryption_key()
    return local_pii_key(config.local_pii_key_file())


def resolve_servers() -> Servers:
    """The servers given from outside, the embedded one for the rest (started here)."""
    pii_key = resolve_pii_key()  # before starting anything: a missing key stops the run at once
    embedded = None
    if not config.connections_given() or not config.airflow_metadata_uri():
        embedded = embedded_postgres.start()
        embedded_env = embedded_postgres.connection_env(embedded)
        _write_connections_file(embedded_env)
    if config.connections_given():
        source, target = config.source_uri(), config.warehouse_uri()
    else:
        source = embedded_env["AIRFLOW_CONN_PACBOOK_SOURCE"]
        target = embedded_env["AIRFLOW_CONN_PACBOOK_WAREHOUSE"]
    metadata = config.airflow_metadata_uri() or embedded_env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
    return Servers(source, target, metadata, embedded, pii_key)


def _write_connections_file(env: dict[str, str]) -> None:
    """The embedded URIs, for psql or a BI tool; kept inside the ignored state folder only."""
    path = config.state_dir() / "connections.env"
    path.write_text("".join(f"export {key}='{value}'\n" for key, value in env.items()))
    path.chmod(0o600)


def ensure_source(servers: Servers) -> None:
    from include.pacbook.source_generator import generate_source, source_is_empty

    if not servers.source_is_embedded:
        log.info("source given from outside (%s): read only", config.redact(servers.source_uri))
        return
    if source_is_empty(servers.source_uri):
        scale, seed = config.source_scale(), config.source_seed()
        print(f"generating the PacBook source (scale {scale}, seed {seed}) ...", flush=True)
        rows = generate_source(servers.source_uri, scale=scale, seed=seed)
        print(f"source generated: {sum(rows.values()):,} rows in {len(rows)} tables", flush=True)


def ensure_roles(servers: Servers) -> None:
    """The least-privilege roles and grants (docs/security.md) on the embedded servers, where this run
    is the administrator; a deployment's own servers get them from its administrator, and a given
    source is never written to. No passwords: the roles are NOLOGIN groups until one is given."""
    if not servers.source_is_embedded:
        return
    apply_privileges(servers.source_uri, servers.warehouse_uri)
    print("roles: pacbook_extractor, pacbook_loader, pacbook_transformer, bi_reader, pii_reader", flush=True)


def ensure_publisher_files(servers: Servers) -> None:
    """A first local run gets today's price lists from the biggest publishers, and a few broken files,
    so the landing zone has something to ingest, quarantine and reject."""
    from include.pacbook.landing_zone import landing_files
    from include.pacbook.publisher_files import read_catalogue, write_publisher_files

    if not servers.source_is_embedded or landing_files(config.landing_dir()):
        return
    files = write_publisher_files(
        config.landing_dir(), read_catalogue(servers.source_uri), dt.date.today(), malformed=True
    )
    print(f"publisher price lists written to {config.landing_dir()}: {len(files)} files", flush=True)


def warehouse_summary(warehouse_uri: str) -> list[tuple[str, int]]:
    with psycopg.connect(warehouse_uri) as conn:
        tables = conn.execute(
            """
            select table_schema || '.' || table_name
            from information_schema.tables
            where table_schema in ('staging', 'dwh', 'marts', 'quarantine') and table_type = 'BASE TABLE'
            order by array_position(array['staging', 'dwh', 'marts', 'quarantine'], table_schema::text), 1
            """
        ).fetchall()
        counts = []
        for (name,) in tables:
            schema, table = name.split(".")
            query = psycopg.sql.SQL("select count(*) from {}.{}").format(
                psycopg.sql.Identifier(schema), psycopg.sql.Identifier(table)
            )
            counts.append((name, conn.execute(query).fetchone()[0]))
    return counts


def print_summary(servers: Servers, run: dict, task_instances: list[dict], seconds: float) -> None:
    counts = warehouse_summary(servers.warehouse_uri)
    rejected = sum(n for name, n in counts if name.startswith("quarantine."))
    states: dict[str, int] = {}
    for ti in task_instances:
        states[ti["state"] or "none"] = states.get(ti["state"] or "none", 0) + 1
    print()
    print(f"PacBook warehouse — run {run['dag_run_id']}: {run['state'].upper()} in {seconds:.0f} s")
    print(f"data interval: {run.get('data_interval_start')} → {run.get('data_interval_end')}")
    print(
        f"warehouse: {config.redact(servers.warehouse_uri)}"
        + (f"  (full URIs: {config.state_dir() / 'connections.env'})" if servers.embedded else "")
    )
    print("tasks: " + ", ".join(f"{n} {state}" for state, n in sorted(states.items())))
    for state in ("failed", "upstream_failed"):
        failed = [ti["task_id"] for ti in task_instances if ti["state"] == state]
        if failed:
            print(f"{state}: {', '.join(failed)}")
    print(f"rejected rows (quarantine): {rejected}")
    width = max((len(name) for name, _ in counts), default=10)
    for schema in ("dwh", "marts"):
        print(f"-- {schema}")
        for name, rows in counts:
            if name.startswith(schema + "."):
                print(f"   {name:<{width}} {rows:>10,}")
    staged = sum(rows for name, rows in counts if name.startswith("staging."))
    print(f"-- staging: {sum(1 for n, _ in counts if n.startswith('staging.'))} tables, {staged:,} rows")
    print(f"exports (Parquet + DuckDB): {config.exports_dir()}")
    day = str(run.get("data_interval_start") or "")[:10]
    report = config.reports_dir() / day / "daily.html"
    print(f"today's report: {report if report.exists() else 'not written'}")
    print(f"dbt docs: {config.reports_dir() / 'dbt_docs' / 'index.html'}")
    print(f"Airflow logs: {config.airflow_home() / 'logs'}")


@contextlib.contextmanager
def sink_if_local():
    """The catching SMTP server, unless alerts go to a real relay (PACBOOK_SMTP_HOST elsewhere)."""
    if config.smtp_host() not in ("127.0.0.1", "localhost"):
        yield None
        return
    with running_smtp_sink(config.smtp_port(), config.smtp_sink_dir()) as sink:
        yield sink


def record_timing(run: dict, total_seconds: float, dag_run_seconds: float) -> None:
    """What a new user waits for, kept for `make bench`'s table (issue 9, figure 6): `make run`'s own
    wall time, measured here rather than by running it again inside the benchmark."""
    timing = {
        "benchmark": "make run",
        "finished_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "state": run["state"],
        "scale": config.source_scale(),
        "seconds_total": round(total_seconds, 1),
        "seconds_dag_run": round(dag_run_seconds, 1),
        "load_average": os.getloadavg(),
    }
    target = config.state_dir() / "bench" / "make-run.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(timing, indent=2) + "\n")


def run() -> int:
    started = time.monotonic()
    servers = resolve_servers()
    try:
        ensure_source(servers)
        ensure_roles(servers)
        ensure_publisher_files(servers)
        env = airflow_env(servers.metadata_uri, servers.connection_env())
        print("preparing Airflow's metadata database ...", flush=True)
        migrate_metadata(env)
        print("starting Airflow (api-server, scheduler, dag-processor, triggerer) ...", flush=True)
        mailbox = config.smtp_sink_dir()
        alerts_before = len(read_messages(mailbox))
        # Alerts of a local run go to a catching SMTP server whose messages land in the state folder.
        with sink_if_local() as sink, AirflowStack(env, config.state_dir() / "airflow-components") as stack:
            if sink is not None:
                print(f"alerts: SMTP on 127.0.0.1:{sink.port}, stored in {mailbox}", flush=True)
            print(
                f"Airflow UI: {stack.base_url} (user {('admin')}; password in "
                f"{env['AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE']})",
                flush=True,
            )
            run_started = time.monotonic()
            final = stack.run_latest_interval(config.DAG_ID, timeout=config.run_timeout_seconds())
            dag_run_seconds = time.monotonic() - run_started
            print(f"DAG run finished in {dag_run_seconds:.0f} s", flush=True)
            task_instances = stack.task_instances(config.DAG_ID, final["dag_run_id"])
        print_summary(servers, final, task_instances, time.monotonic() - started)
        record_timing(final, time.monotonic() - started, dag_run_seconds)
        print(f"alerts sent during the run: {len(read_messages(mailbox)) - alerts_before} (in {mailbox})")
        return 0 if final["state"] == "success" else 1
    finally:
        if servers.embedded is not None:
            with contextlib.suppress(Exception):
                embedded_postgres.stop(servers.embedded)


def serve() -> int:
    """`make airflow`: the same servers and Airflow components, kept up until Ctrl-C (or SIGTERM)."""

    def stop_serving(signum, frame):
        raise KeyboardInterrupt

    # Explicit handlers: a shell that starts make in the background leaves SIGINT ignored.
    signal.signal(signal.SIGINT, stop_serving)
    signal.signal(signal.SIGTERM, stop_serving)
    servers = resolve_servers()
    try:
        ensure_source(servers)
        ensure_roles(servers)
        env = airflow_env(servers.metadata_uri, servers.connection_env())
        migrate_metadata(env)
        with sink_if_local(), AirflowStack(env, config.state_dir() / "airflow-components") as stack:
            stack.wait_for_dag(config.DAG_ID)
            print(f"Airflow UI: {stack.base_url}  login: admin / {stack.admin_password}", flush=True)
            print("the DAG is paused: unpause or trigger it in the UI; Ctrl-C stops everything", flush=True)
            with contextlib.suppress(KeyboardInterrupt):
                while True:
                    time.sleep(5)
                    stack.check_alive()
        return 0
    finally:
        if servers.embedded is not None:
            with contextlib.suppress(Exception):
                embedded_postgres.stop(servers.embedded)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["run", "airflow"])
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    return run() if args.command == "run" else serve()


if __name__ == "__main__":
    sys.exit(main())
