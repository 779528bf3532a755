"""The one reader of PacBook's configuration: connections, paths, schedule.

Every other module asks this one. Connections come the Airflow way (``AIRFLOW_CONN_<ID>`` URIs,
or Airflow's own connection store when running inside a task); paths and knobs come from
``PACBOOK_*`` environment variables with defaults that work on a laptop.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

PROJECT_ROOT = Path(__file__).resolve().parents[2]

SOURCE_CONN_ID = "pacbook_source"
WAREHOUSE_CONN_ID = "pacbook_warehouse"
# The key that encrypts personal columns in dwh is this connection's password (docs/security.md#the-key).
PII_KEY_CONN_ID = "pacbook_pii_key"

DAG_ID = "pacbook_warehouse"
DBT_PROJECT_NAME = "pacbook"
DBT_PROJECT_DIR = PROJECT_ROOT / "include" / "dbt_pacbook"
DBT_MANIFEST_PATH = DBT_PROJECT_DIR / "target" / "manifest.json"
# When a dbt run stamps its snapshots' new versions: set by dbt_groups and dbt_cli, read by
# macros/snapshot_get_time.sql (an environment variable, not a var: vars that change force a full parse).
SNAPSHOT_AT_VARIABLE = "PACBOOK_SNAPSHOT_AT"
# Settings of every session dbt opens on the warehouse (given as PGOPTIONS). JIT off: compiling the
# large plans cost more than it saved; fct_customer_monthly's incremental query took 2.1 s with it and
# 0.46 s without at scale 10 (EXPLAIN ANALYZE, warm). The whole builds of figure 4 moved within noise.
DBT_SESSION_SETTINGS = {"jit": "off"}
# What every production dbt run leaves out (the nightly DAG's tasks, the CLI runs): the unit tests. Their
# inputs are fixed rows in the YAML, so they prove the models' logic once per change of code, which
# `make test` and CI do (tests/marts/test_dbt_build.py); run every night they only cost time - dbt Labs
# recommends the same. A unit test that fails on a commit stops that commit in CI.
DBT_PRODUCTION_ENV = {"DBT_EXCLUDE_RESOURCE_TYPES": "unit_test"}

# The 15 tables of the PacBook OLTP source (CONTRACT.md §2), in an order that respects foreign keys.
SOURCE_TABLES = (
    "country",
    "address_status",
    "address",
    "author",
    "book_language",
    "publisher",
    "book",
    "book_author",
    "customer",
    "customer_address",
    "shipping_method",
    "order_status",
    "cust_order",
    "order_line",
    "order_history",
)


def _env(name: str, default: str | None = None) -> str | None:
    value = os.environ.get(name)
    return value if value not in (None, "") else default


# The roles the parts of the pipeline work as (docs/security.md): whenever the connection's login may
# take them, each part's sessions start as its role (include/pacbook/session_roles.py). A server's
# naming rules (or a test sharing a server) may rename them.
SOURCE_READ_ROLE = _env("PACBOOK_SOURCE_READ_ROLE", "pacbook_extractor")
WAREHOUSE_LOAD_ROLE = _env("PACBOOK_WAREHOUSE_LOAD_ROLE", "pacbook_loader")
WAREHOUSE_TRANSFORM_ROLE = _env("PACBOOK_WAREHOUSE_TRANSFORM_ROLE", "pacbook_transformer")
MARTS_READ_ROLE = _env("PACBOOK_MARTS_READ_ROLE", "bi_reader")
PII_READ_ROLE = _env("PACBOOK_PII_READ_ROLE", "pii_reader")  # people's, never the pipeline's


def state_dir() -> Path:
    """Where runs keep their files (databases, Airflow home, logs, markers); git ignores it."""
    return Path(_env("PACBOOK_STATE_DIR", str(PROJECT_ROOT / ".state"))).resolve()


def embedded_postgres_port() -> int:
    return int(_env("PACBOOK_EMBEDDED_PG_PORT", "55432"))


def nightly_schedule() -> str:
    """Cron (UTC) whose consecutive ticks bound each run's data interval: by default one calendar day,
    run as soon as the day has closed."""
    return _env("PACBOOK_SCHEDULE", "0 0 * * *")


def retry_delay_seconds() -> int:
    """First retry delay; it doubles on each retry (exponential backoff) up to the cap."""
    return int(_env("PACBOOK_RETRY_DELAY_SECONDS", "60"))


def source_scale() -> float:
    """Scale of the generated source when none is given (1 = the real shop's size)."""
    return float(_env("PACBOOK_SOURCE_SCALE", "1"))


def source_seed() -> int:
    return int(_env("PACBOOK_SOURCE_SEED", "42"))


_pinned_connections: dict[str, str] = {}


@contextlib.contextmanager
def pinned_connections():
    """Resolves the pipeline's connections once, in this process, for a block that forks workers.

    Inside an Airflow 3 task, a connection kept in Airflow's store is fetched through the task
    supervisor; Luigi's forked workers cannot do that, so they inherit the resolved URIs instead.
    The pin ends with the block, so a later lookup sees changed connections.
    """
    _pinned_connections.clear()
    try:
        for conn_id in (SOURCE_CONN_ID, WAREHOUSE_CONN_ID):
            _pinned_connections[conn_id] = _require(conn_id)
        yield
    finally:
        _pinned_connections.clear()


def _connection_uri(conn_id: str) -> str | None:
    if conn_id in _pinned_connections:
        return _pinned_connections[conn_id]
    uri = _env(f"AIRFLOW_CONN_{conn_id.upper()}")
    if uri:
        return uri
    try:  # inside a task, connections may live in Airflow's own store or a secrets backend
        from airflow.sdk import BaseHook

        return BaseHook.get_connection(conn_id).get_uri()
    except Exception:  # noqa: BLE001 - absent connection is reported by the caller with its name
        return None


class MissingConnectionError(RuntimeError):
    pass


def _require(conn_id: str) -> str:
    uri = _connection_uri(conn_id)
    if not uri:
        raise MissingConnectionError(
            f"connection {conn_id!r} is not configured: set AIRFLOW_CONN_{conn_id.upper()} "
            "to a postgresql://user:password@host:port/dbname URI (README, 'Connections')"
        )
    return uri


def source_uri() -> str:
    return _require(SOURCE_CONN_ID)


def warehouse_uri() -> str:
    return _require(WAREHOUSE_CONN_ID)


def admin_uris() -> tuple[str, str]:
    """An administrator's URIs of the source and the warehouse, for `python -m include.pacbook.privileges`
    only (the pipeline never uses them): ``PACBOOK_SOURCE_ADMIN_URI`` and ``PACBOOK_WAREHOUSE_ADMIN_URI``."""
    uris = {name: _env(name) for name in ("PACBOOK_SOURCE_ADMIN_URI", "PACBOOK_WAREHOUSE_ADMIN_URI")}
    missing = [name for name, uri in uris.items() if not uri]
    if missing:
        raise MissingConnectionError(
            f"{' and '.join(missing)} not set: an administrator's postgresql:// URI of each server "
            "(a superuser, or the database's owner with CREATEROLE; docs/security.md#where-they-are-applied)"
        )
    return uris["PACBOOK_SOURCE_ADMIN_URI"], uris["PACBOOK_WAREHOUSE_ADMIN_URI"]


def pii_encryption_key() -> str:
    """The key of the personal columns (pgcrypto): the password of the Airflow connection ``pacbook_pii_key``.

    Given as ``AIRFLOW_CONN_PACBOOK_PII_KEY`` (JSON ``{"conn_type": "generic", "password": "<key>"}`` or a
    URI) or kept in a secrets backend under that id; never read from the repository, and never made up
    for a warehouse given from outside. Inside Airflow the key is registered with the secrets masker, so
    no task log or rendered field shows it.
    """
    key = _connection_password(PII_KEY_CONN_ID)
    if not key:
        raise MissingConnectionError(
            f"connection {PII_KEY_CONN_ID!r} is not configured: set AIRFLOW_CONN_{PII_KEY_CONN_ID.upper()}="
            '\'{"conn_type": "generic", "password": "<key>"}\' (or that connection id in the secrets backend); '
            "the key encrypts the personal columns of dwh (docs/security.md#the-key)"
        )
    with contextlib.suppress(Exception):  # outside Airflow there is no masker, and nothing to mask for
        from airflow.sdk.log import mask_secret

        mask_secret(key)
    return key


def _connection_password(conn_id: str) -> str | None:
    value = _env(f"AIRFLOW_CONN_{conn_id.upper()}")
    if value is None:
        try:  # inside a task the key may live in Airflow's own store or a secrets backend
            from airflow.sdk import BaseHook

            return BaseHook.get_connection(conn_id).password or None
        except Exception:  # noqa: BLE001 - absent connection is reported by the caller with its name
            return None
    if value.lstrip().startswith("{"):  # Airflow's JSON form of a connection
        return json.loads(value).get("password") or None
    return unquote(urlsplit(value).password or "") or None


def local_pii_key_file() -> Path:
    """Where `make run` keeps the generated key of the embedded (local) warehouse: the ignored state folder."""
    return state_dir() / "secrets" / "pii_key"


def connections_given() -> bool:
    """True when both servers come from outside; otherwise the embedded server holds both."""
    return bool(_env("AIRFLOW_CONN_PACBOOK_SOURCE")) and bool(_env("AIRFLOW_CONN_PACBOOK_WAREHOUSE"))


@dataclass(frozen=True)
class ConnectionParts:
    host: str
    port: int
    user: str
    password: str
    dbname: str


def connection_parts(uri: str) -> ConnectionParts:
    parts = urlsplit(uri)
    return ConnectionParts(
        host=unquote(parts.hostname or "localhost"),
        port=parts.port or 5432,
        user=unquote(parts.username or ""),
        password=unquote(parts.password or ""),
        dbname=unquote(parts.path.lstrip("/")),
    )


def connection_options(uri: str) -> str:
    """The libpq ``options`` of a URI (session settings such as the role it starts as), or ''."""
    pairs = (pair.split("=", 1) for pair in urlsplit(uri).query.split("&") if "=" in pair)
    return " ".join(unquote(value) for key, value in pairs if key == "options")  # unquote: libpq keeps a '+'


def redact(uri: str) -> str:
    """The URI without its password, for logs and summaries."""
    parts = connection_parts(uri)
    return f"postgresql://{parts.user}@{parts.host}:{parts.port}/{parts.dbname}"


def dbt_cli_env(uri: str) -> dict[str, str]:
    """Variables the project's profiles.yml reads, for the plain dbt CLI (Cosmos builds its own)."""
    parts = connection_parts(uri)
    return {
        "PACBOOK_DBT_HOST": parts.host,
        "PACBOOK_DBT_PORT": str(parts.port),
        "PACBOOK_DBT_USER": parts.user,
        "PACBOOK_DBT_PASSWORD": parts.password,
        "PACBOOK_DBT_DBNAME": parts.dbname,
    }


def dbt_executable() -> str:
    """The dbt CLI of the interpreter that runs: beside it in a virtualenv (`make`), else on PATH
    (the image installs the requirements as the airflow user, into ~/.local/bin)."""
    beside = Path(sys.executable).with_name("dbt")
    return str(beside) if beside.exists() else (shutil.which("dbt") or "dbt")


COSMOS_EXECUTION_MODES = ("local-runner", "local-subprocess", "watcher")


def cosmos_execution_mode() -> str:
    """How Cosmos runs the dbt tasks: ``local-runner`` (dbt in the task's process, dbtRunner),
    ``local-subprocess`` (a ``dbt`` process per task) or ``watcher`` (one ``dbt build`` per task group,
    watched by one task per node; needs a real scheduler and triggerer, PITFALLS.md #11)."""
    mode = _env("PACBOOK_COSMOS_EXECUTION_MODE", "local-runner").strip().lower()
    if mode not in COSMOS_EXECUTION_MODES:
        raise ValueError(f"PACBOOK_COSMOS_EXECUTION_MODE={mode!r}: expected one of {', '.join(COSMOS_EXECUTION_MODES)}")
    return mode


def airflow_home() -> Path:
    return Path(_env("AIRFLOW_HOME", str(state_dir() / "airflow"))).resolve()


def airflow_metadata_uri() -> str | None:
    """Airflow's own database when given from outside (Airflow's variable); else the embedded one."""
    return _env("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN")


def airflow_api_port() -> int:
    return int(_env("PACBOOK_AIRFLOW_PORT", "8080"))


def run_timeout_seconds() -> int:
    """How long `make run` waits for the DAG run before giving up."""
    return int(_env("PACBOOK_RUN_TIMEOUT", "1800"))


def test_admin_uri() -> str | None:
    """A PostgreSQL server where the test suite may create its own databases; None = embedded."""
    return _env("PACBOOK_TEST_ADMIN_URI")


def test_postgres_port() -> int:
    return int(_env("PACBOOK_TEST_PG_PORT", "55433"))


def test_airflow_port() -> int:
    return int(_env("PACBOOK_TEST_AIRFLOW_PORT", "8091"))


def real_data_dir() -> Path:
    """The real PacBook dump (../shared/pacbook_real), used by tests when present."""
    return Path(_env("PACBOOK_REAL_DATA_DIR", str(PROJECT_ROOT.parent / "shared" / "pacbook_real")))


# --- notifications and audit


def airflow_base_url() -> str:
    """The Airflow UI's address as Airflow itself knows it (log links in alerts point there)."""
    return _env("AIRFLOW__API__BASE_URL", f"http://127.0.0.1:{airflow_api_port()}").rstrip("/")


def smtp_host() -> str:
    """The SMTP relay alerts go through (locally: `python -m include.pacbook.smtp_sink`)."""
    return _env("PACBOOK_SMTP_HOST", "127.0.0.1")


def smtp_port() -> int:
    return int(_env("PACBOOK_SMTP_PORT", "8025"))


def alert_email_to() -> list[str]:
    """Recipients of failure alerts, comma-separated."""
    value = _env("PACBOOK_ALERT_EMAIL_TO", "data-oncall@pacbook.local")
    return [address.strip() for address in value.split(",") if address.strip()]


def alert_email_from() -> str:
    return _env("PACBOOK_ALERT_EMAIL_FROM", "airflow@pacbook.local")


def alert_webhook_url() -> str | None:
    """When set, every alert is also POSTed there as JSON (chat or incident tool)."""
    return _env("PACBOOK_ALERT_WEBHOOK_URL")


def smtp_sink_dir() -> Path:
    """Where the local catching SMTP server writes the messages it receives."""
    return Path(_env("PACBOOK_SMTP_SINK_DIR", str(state_dir() / "mail"))).resolve()


def task_audit_enabled() -> bool:
    """Whether the audit listener records task outcomes into audit.task_run (on unless set to 0/false/off)."""
    return _env("PACBOOK_TASK_AUDIT", "on").strip().lower() not in ("0", "false", "off", "no")


def run_deadline_minutes() -> float:
    """How long after it is queued a run may take before the deadline alert fires (DeadlineAlert).
    A nightly run is queued when its interval closes, so by default it must be done 4 h later."""
    return float(_env("PACBOOK_RUN_DEADLINE_MINUTES", "240"))


# --- files in and out


def landing_dir() -> Path:
    """Where publishers drop their price lists (``book_costs_<publisher>_<YYYYMMDD>.csv``)."""
    return Path(_env("PACBOOK_LANDING_DIR", str(state_dir() / "landing"))).resolve()


def bronze_dir() -> Path:
    """Parquet copies of every ingested landing file, one per file version."""
    return Path(_env("PACBOOK_BRONZE_DIR", str(state_dir() / "bronze"))).resolve()


def rejected_dir() -> Path:
    """Landing files that could not be parsed at all, each beside a ``.reason`` file."""
    return Path(_env("PACBOOK_REJECTED_DIR", str(landing_dir() / "rejected"))).resolve()


def exports_dir() -> Path:
    """The analysts' columnar copy of the marts: Parquet files and one DuckDB file."""
    return Path(_env("PACBOOK_EXPORTS_DIR", str(state_dir() / "exports"))).resolve()


def reports_dir() -> Path:
    """Daily and month-end reports, under ``<reports_dir>/<YYYY-MM-DD>/``; the dbt docs site beside them."""
    return Path(_env("PACBOOK_REPORTS_DIR", str(PROJECT_ROOT / "reports"))).resolve()


def chromium_executable() -> str:
    """Headless Chromium for the browser tests and report screenshots (Debian's ``chromium``)."""
    return _env("PACBOOK_CHROMIUM", "/usr/bin/chromium")


def chromedriver_executable() -> str:
    return _env("PACBOOK_CHROMEDRIVER", "/usr/bin/chromedriver")


def max_rejected_share() -> float:
    """A run fails when more than this share of any source table's rows breaks a validation rule."""
    return float(_env("PACBOOK_MAX_REJECTED_SHARE", "0.05"))


def landing_wait_seconds() -> int:
    """How long each run waits for new publisher files before going on without them (a quiet night is normal)."""
    return int(_env("PACBOOK_LANDING_WAIT_SECONDS", "300"))


def warehouse_wait_seconds() -> int:
    """How long a run waits for another run to finish writing the warehouse before it fails."""
    return int(_env("PACBOOK_WAREHOUSE_WAIT_SECONDS", "21600"))


def source_wait_seconds() -> int:
    """How long the first sensor waits for the source to answer and hold orders before the run fails."""
    return int(_env("PACBOOK_SOURCE_WAIT_SECONDS", "7200"))
