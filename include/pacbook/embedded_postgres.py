"""The embedded PostgreSQL that holds source, warehouse and Airflow's metadata when no servers are given.

It uses the PostgreSQL 16 binaries shipped by the PyPI package ``pgserver`` (so nothing needs to be
installed system-wide), keeps its data in the ignored state folder, listens on 127.0.0.1 only with
password authentication, and is started and stopped explicitly — not by an ``atexit`` hook, because
several processes (Airflow's scheduler, workers, tests) share it.

    python -m include.pacbook.embedded_postgres start   # prints nothing secret; URIs go to the state folder
    python -m include.pacbook.embedded_postgres stop
"""

from __future__ import annotations

import argparse
import functools
import os
import secrets
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql

from include.pacbook import config

DATABASES = ("pacbook_source", "pacbook_warehouse", "airflow")
SERVICE_USER = "pgserver"  # PostgreSQL refuses to run as root; pgserver's own convention


def bin_dir() -> Path:
    from pgserver._commands import POSTGRES_BIN_PATH

    return Path(POSTGRES_BIN_PATH)


@dataclass(frozen=True)
class EmbeddedServer:
    root: Path
    port: int

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def socket_dir(self) -> Path:
        return self.root / "socket"

    @property
    def log_file(self) -> Path:
        return self.root / "postgres.log"

    @property
    def password_file(self) -> Path:
        return self.root / "superuser.password"

    def uri(self, dbname: str) -> str:
        password = self.password_file.read_text().strip()
        return f"postgresql://postgres:{password}@127.0.0.1:{self.port}/{dbname}"


@functools.cache
def _as_service_user() -> dict:
    """As root, PostgreSQL's binaries run as a service user that can read them."""
    if os.geteuid() != 0:
        return {}
    from pgserver.utils import ensure_folder_permissions, ensure_prefix_permissions, ensure_user_exists

    ensure_user_exists(SERVICE_USER)
    binaries = bin_dir()
    ensure_prefix_permissions(binaries)
    ensure_folder_permissions(binaries.parent, 0o555)
    return {"user": SERVICE_USER}


def _give_to_service_user(path: Path) -> None:
    if os.geteuid() == 0:
        from pgserver.utils import ensure_prefix_permissions

        ensure_prefix_permissions(path)
        shutil.chown(path, SERVICE_USER, SERVICE_USER)


def _run(args: list[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(args, check=True, capture_output=True, text=True, **_as_service_user(), **kwargs)


def server(root: Path | None = None, port: int | None = None) -> EmbeddedServer:
    return EmbeddedServer(
        root=root or config.state_dir() / "postgres",
        port=port or config.embedded_postgres_port(),
    )


def _initialise(srv: EmbeddedServer) -> None:
    srv.root.mkdir(parents=True, exist_ok=True)
    srv.root.chmod(0o755)
    srv.password_file.write_text(secrets.token_urlsafe(18) + "\n")
    srv.password_file.chmod(0o600)
    pwfile = srv.root / ".initdb.pw"
    pwfile.write_text(srv.password_file.read_text())
    srv.socket_dir.mkdir(exist_ok=True)
    for path in (pwfile, srv.socket_dir):
        _give_to_service_user(path)
    _give_to_service_user(srv.root)
    try:
        _run(
            [
                str(bin_dir() / "initdb"),
                "-D",
                str(srv.data_dir),
                "-U",
                "postgres",
                f"--pwfile={pwfile}",
                "--auth-host=scram-sha-256",
                "--auth-local=trust",
                "--encoding=UTF8",
                "--locale=C",
            ]
        )
    finally:
        pwfile.unlink(missing_ok=True)


def is_running(srv: EmbeddedServer) -> bool:
    if not (srv.data_dir / "postmaster.pid").exists():
        return False
    result = subprocess.run(
        [str(bin_dir() / "pg_ctl"), "-D", str(srv.data_dir), "status"],
        capture_output=True,
        text=True,
        **_as_service_user(),
    )
    return result.returncode == 0


def start(srv: EmbeddedServer | None = None) -> EmbeddedServer:
    """Starts the server (initialising it on first use) and creates the three databases."""
    srv = srv or server()
    if not (srv.data_dir / "PG_VERSION").exists():
        _initialise(srv)
    if not is_running(srv):
        options = f"-h 127.0.0.1 -p {srv.port} -k {srv.socket_dir} -c max_connections=200 -c fsync=off"
        try:
            _run(
                [
                    str(bin_dir() / "pg_ctl"),
                    "-D",
                    str(srv.data_dir),
                    "-o",
                    options,
                    "-l",
                    str(srv.log_file),
                    "-w",
                    "-t",
                    "60",
                    "start",
                ]
            )
        except subprocess.CalledProcessError as error:
            tail = srv.log_file.read_text()[-2000:] if srv.log_file.exists() else ""
            raise RuntimeError(
                f"embedded PostgreSQL did not start on 127.0.0.1:{srv.port}: {error.stderr.strip()}\n{tail}"
            ) from error
    _wait_until_ready(srv)
    _create_databases(srv)
    return srv


def _wait_until_ready(srv: EmbeddedServer, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with psycopg.connect(srv.uri("postgres"), connect_timeout=3):
                return
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)


def _create_databases(srv: EmbeddedServer, names: tuple[str, ...] = DATABASES) -> None:
    with psycopg.connect(srv.uri("postgres"), autocommit=True) as conn:
        existing = {row[0] for row in conn.execute("select datname from pg_database")}
        for name in names:
            if name not in existing:
                conn.execute(sql.SQL("create database {}").format(sql.Identifier(name)))


def create_database(srv: EmbeddedServer, name: str, *, drop_first: bool = False) -> str:
    """A fresh database on the embedded server (tests use one per scenario); returns its URI."""
    with psycopg.connect(srv.uri("postgres"), autocommit=True) as conn:
        if drop_first:
            conn.execute(sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(name)))
        exists = conn.execute("select 1 from pg_database where datname = %s", (name,)).fetchone()
        if not exists:
            conn.execute(sql.SQL("create database {}").format(sql.Identifier(name)))
    return srv.uri(name)


def stop(srv: EmbeddedServer | None = None) -> None:
    srv = srv or server()
    if is_running(srv):
        _run([str(bin_dir() / "pg_ctl"), "-D", str(srv.data_dir), "-m", "fast", "-w", "stop"])


def connection_env(srv: EmbeddedServer) -> dict[str, str]:
    """The Airflow-style variables that point the pipeline at the embedded server."""
    return {
        "AIRFLOW_CONN_PACBOOK_SOURCE": srv.uri("pacbook_source"),
        "AIRFLOW_CONN_PACBOOK_WAREHOUSE": srv.uri("pacbook_warehouse"),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": srv.uri("airflow").replace("postgresql://", "postgresql+psycopg2://"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["start", "stop", "status"])
    args = parser.parse_args()
    srv = server()
    if args.action == "start":
        start(srv)
        print(f"embedded PostgreSQL ready on 127.0.0.1:{srv.port} (data in {srv.data_dir})")
    elif args.action == "stop":
        stop(srv)
        print("embedded PostgreSQL stopped")
    else:
        print("running" if is_running(srv) else "stopped")


if __name__ == "__main__":
    main()
