"""The embedded PostgreSQL that holds source, warehouse and Airflow's metadata when no servers are given.

It runs Debian's PostgreSQL 15 (package ``postgresql-15``, installed by ``make``; it includes the contrib
modules, pgcrypto among them, which the warehouse's personal-data encryption needs) on a data folder
of its own in the ignored state folder and a port of its own, never the package's cluster or service.
It listens on 127.0.0.1 only with password authentication, and is started and stopped explicitly — not
by an ``atexit`` hook, because several processes (Airflow's scheduler, workers, tests) share it.

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
PG_MAJOR = "15"
# Debian's layout: one folder per major version, so another installed major cannot get in the way.
BIN_DIR = Path(f"/usr/lib/postgresql/{PG_MAJOR}/bin")
# Debian's initdb and postgres refuse to run as root: as root they run as the package's own user.
SERVICE_USER = "postgres"


class EmbeddedPostgresError(RuntimeError):
    pass


def bin_dir() -> Path:
    """Debian's PostgreSQL 15 binaries (initdb, pg_ctl, psql, pg_restore, ...)."""
    if not (BIN_DIR / "initdb").exists():
        raise EmbeddedPostgresError(
            f"PostgreSQL {PG_MAJOR} is not installed ({BIN_DIR / 'initdb'} is missing): run `make run` or "
            f"`make pytest`, which install Debian's postgresql-{PG_MAJOR}, or `apt-get install postgresql-{PG_MAJOR}`"
        )
    return BIN_DIR


@dataclass(frozen=True)
class EmbeddedServer:
    root: Path
    port: int
    # A disposable server (the tests' own) is re-initialised when its data folder is of another
    # PostgreSQL version; `make run`'s server holds a generated source and a warehouse, so it is not.
    disposable: bool = False

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


def _is_root() -> bool:
    return os.geteuid() == 0


@functools.cache
def _as_service_user() -> dict:
    """subprocess arguments that run a PostgreSQL binary as the service user when we are root."""
    if not _is_root():
        return {}
    return {"user": SERVICE_USER, "group": SERVICE_USER, "extra_groups": [], "cwd": "/"}


def _give_to_service_user(path: Path) -> None:
    """As root: the service user owns ``path`` and can reach it through every parent folder."""
    if not _is_root():
        return
    shutil.chown(path, SERVICE_USER, SERVICE_USER)
    # Traversable (x), not listable: the server must reach its folder, nothing more.
    for parent in path.resolve().parents:
        mode = parent.stat().st_mode
        if not mode & 0o001:
            parent.chmod(mode | 0o001)


def _run(args: list[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(args, check=True, capture_output=True, text=True, **_as_service_user(), **kwargs)


def server(root: Path | None = None, port: int | None = None, *, disposable: bool = False) -> EmbeddedServer:
    return EmbeddedServer(
        root=root or config.state_dir() / "postgres",
        port=port or config.embedded_postgres_port(),
        disposable=disposable,
    )


def _initialise(srv: EmbeddedServer) -> None:
    srv.root.mkdir(parents=True, exist_ok=True)
    srv.root.chmod(0o755)
    srv.password_file.write_text(secrets.token_urlsafe(18) + "\n")
    srv.password_file.chmod(0o600)
    pwfile = srv.root / ".initdb.pw"
    pwfile.write_text(srv.password_file.read_text())
    # Local (socket) logins are trusted, so only the server's own user may reach the socket.
    srv.socket_dir.mkdir(mode=0o700, exist_ok=True)
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
    _check_data_version(srv)
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


def _check_data_version(srv: EmbeddedServer) -> None:
    """A data folder of another major version (the former pgserver PostgreSQL 16) cannot be opened.

    A disposable server (the tests') is simply initialised again; `make run`'s own data is never
    deleted behind the user's back: the error says how to start afresh.
    """
    version_file = srv.data_dir / "PG_VERSION"
    if not version_file.exists():
        return
    found = version_file.read_text().strip()
    if found == PG_MAJOR:
        return
    if srv.disposable and not (srv.data_dir / "postmaster.pid").exists():
        shutil.rmtree(srv.root)
        return
    raise EmbeddedPostgresError(
        f"the embedded PostgreSQL data in {srv.data_dir} was created by PostgreSQL {found}, and this "
        f"project now runs PostgreSQL {PG_MAJOR}, which cannot open it. Stop whatever server still runs "
        f"on it, then start afresh: `make clean` (removes the whole state folder) or remove {srv.root}"
    )


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
