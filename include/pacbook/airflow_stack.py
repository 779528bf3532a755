"""Real Airflow, the way production runs it: api-server, scheduler, dag-processor and triggerer.

``airflow dags test`` runs no triggerer and crashes on a DAG with a deadline (PITFALLS.md #6, #11), so
``make run`` and the end-to-end tests start the real components on the metadata database, trigger a
run through the REST API, wait for it, and stop every process they started.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from include.pacbook import config

COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer")
ADMIN_USER = "admin"

# What every dbt task imports before it runs a node: ~3 s of CPU per task, 43 tasks a night on 2 cores.
# The scheduler's LocalExecutor workers start from a forkserver that has imported them once, and each
# task process is forked from its worker, so a task finds them loaded. Only third-party libraries: the
# project's own code (dags/, include/) is imported afresh by each task, so an edit needs no restart.
TASK_PRELOAD_MODULES = (
    "airflow.executors.local_executor",
    "airflow.sdk.execution_time.task_runner",
    "cosmos.operators.local",
    "dbt.cli.main",
    "dbt.adapters.postgres",
    "psycopg",
    "luigi",
    "pandas",
)


def _secret(path: Path, length: int = 24) -> str:
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_urlsafe(length))
        path.chmod(0o600)
    return path.read_text().strip()


def airflow_env(
    metadata_uri: str, connections: dict[str, str], home: Path | None = None, port: int | None = None
) -> dict[str, str]:
    """The environment every Airflow component and task of this project runs with."""
    home = home or config.airflow_home()
    port = port or config.airflow_api_port()
    state = config.state_dir()
    home.mkdir(parents=True, exist_ok=True)
    passwords_file = home / "simple_auth_manager_passwords.json"
    if not passwords_file.exists():
        passwords_file.write_text(json.dumps({ADMIN_USER: secrets.token_urlsafe(12)}))
        passwords_file.chmod(0o600)
    env = dict(os.environ)
    env.update(connections)
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": metadata_uri,
            "AIRFLOW__CORE__DAGS_FOLDER": str(config.PROJECT_ROOT / "dags"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(config.PROJECT_ROOT / "plugins"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            # 2 cores here: Airflow's default of 32 workers only thrashes (PITFALLS.md #9).
            "AIRFLOW__CORE__PARALLELISM": "4",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{ADMIN_USER}:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords_file),
            "AIRFLOW__API__PORT": str(port),
            "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{port}",
            # Components sign and check each other's tokens: they must share one secret.
            "AIRFLOW__API_AUTH__JWT_SECRET": _secret(home / "jwt_secret"),
            "AIRFLOW__CORE__FERNET_KEY": "",
            "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "True",
            "AIRFLOW__SCHEDULER__MP_START_METHOD": "forkserver",
            "AIRFLOW__SCHEDULER__MP_FORKSERVER_PRELOAD": ",".join(TASK_PRELOAD_MODULES),
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "60",
            "AIRFLOW__COSMOS__CACHE_DIR": str(state / "cosmos"),
            "AIRFLOW__COSMOS__ENABLE_TELEMETRY": "False",
            "DO_NOT_TRACK": "1",
            "SCARF_ANALYTICS": "false",
            "DBT_SEND_ANONYMOUS_USAGE_STATS": "False",
            "XDG_RUNTIME_DIR": str(state / "runtime"),
            "PYTHONPATH": os.pathsep.join(
                [str(config.PROJECT_ROOT)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])
            ),
        }
    )
    return env


def _airflow_bin() -> str:
    return str(Path(sys.executable).with_name("airflow"))


def migrate_metadata(env: dict[str, str]) -> None:
    result = subprocess.run([_airflow_bin(), "db", "migrate"], env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"airflow db migrate failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")


@dataclass
class AirflowStack:
    env: dict[str, str]
    log_dir: Path
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)
    _token: str | None = field(default=None, init=False, repr=False)

    @property
    def base_url(self) -> str:
        return self.env["AIRFLOW__API__BASE_URL"]

    @property
    def admin_password(self) -> str:
        return json.loads(Path(self.env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"]).read_text())[ADMIN_USER]

    def start(self) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        for component in COMPONENTS:
            args = [_airflow_bin(), component]
            if component == "api-server":
                args += ["--port", self.env["AIRFLOW__API__PORT"], "--host", "127.0.0.1"]
            log_file = open(self.log_dir / f"{component}.log", "ab")  # noqa: SIM115 - owned by the process
            self.processes[component] = subprocess.Popen(
                args, env=self.env, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True
            )
        self._wait_healthy()

    def check_alive(self) -> None:
        for component, proc in self.processes.items():
            if proc.poll() is not None:
                tail = (self.log_dir / f"{component}.log").read_text(errors="replace")[-3000:]
                raise RuntimeError(f"airflow {component} exited with code {proc.returncode}:\n{tail}")

    def _wait_healthy(self, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check_alive()
            try:
                health = self._request("GET", "/api/v2/monitor/health", auth=False)
                if health.get("scheduler", {}).get("status") == "healthy":
                    return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(2)
        raise TimeoutError(f"Airflow did not become healthy within {timeout:.0f} s (logs in {self.log_dir})")

    def stop(self) -> None:
        """Stops every component by its process group (workers and dbt children included)."""
        for proc in self.processes.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 30
        for proc in self.processes.values():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        # A component's children can outlive it: an executor worker started by the forkserver was
        # seen idle after its scheduler had stopped. Each component leads its own process group, so
        # whatever is left of the group goes now.
        groups = set()
        for proc in self.processes.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
                groups.add(proc.pid)
        _wait_until_gone(groups)
        self.processes.clear()

    def __enter__(self) -> AirflowStack:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    # --- REST API -------------------------------------------------------------------------------

    def _auth_header(self) -> dict[str, str]:
        if self._token is None:
            body = json.dumps({"username": ADMIN_USER, "password": self.admin_password}).encode()
            request = urllib.request.Request(
                f"{self.base_url}/auth/token",
                data=body,
                method="POST",
                headers={"Content-Type": "application/json"},
            )
            with urllib.request.urlopen(request, timeout=30) as response:
                self._token = json.loads(response.read())["access_token"]
        return {"Authorization": f"Bearer {self._token}"}

    def _request(self, method: str, path: str, body: dict | None = None, auth: bool = True) -> dict:
        headers = {"Content-Type": "application/json", **(self._auth_header() if auth else {})}
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(f"{self.base_url}{path}", data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                payload = response.read()
        except urllib.error.HTTPError as error:
            detail = error.read().decode(errors="replace")[:1000]
            raise ApiError(error.code, f"{method} {path}: HTTP {error.code}: {detail}") from None
        return json.loads(payload) if payload else {}

    def wait_for_dag(self, dag_id: str, timeout: float = 180) -> dict:
        """Waits until the dag-processor has parsed the DAG; fails fast on an import error."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check_alive()
            errors = self._request("GET", "/api/v2/importErrors").get("import_errors", [])
            if errors:
                raise RuntimeError("DAG import errors:\n" + "\n".join(e["stack_trace"][-2000:] for e in errors))
            try:
                return self._request("GET", f"/api/v2/dags/{dag_id}")
            except ApiError as error:
                if error.status != 404:
                    raise
            time.sleep(2)
        raise TimeoutError(f"DAG {dag_id} was not parsed within {timeout:.0f} s")

    def set_connection(self, conn_id: str, uri: str) -> None:
        """Stores a connection in Airflow's own store (used when no AIRFLOW_CONN_ variable overrides it)."""
        parts = config.connection_parts(uri)
        body = {
            "connection_id": conn_id,
            "conn_type": "postgres",
            "host": parts.host,
            "port": parts.port,
            "login": parts.user,
            "password": parts.password,
            "schema": parts.dbname,
        }
        try:
            self._request("POST", "/api/v2/connections", body)
        except ApiError as error:
            if error.status != 409:
                raise
            self._request("PATCH", f"/api/v2/connections/{conn_id}", body)

    def task_log(self, dag_id: str, run_id: str, task_id: str, try_number: int) -> str:
        """A task try's log as plain text lines (event, then its error details), as the UI shows it.

        The ``::group::``/``::endgroup::`` markers only fold sections in the UI; they are left out.
        """
        quoted = urllib.parse.quote(run_id, safe="")
        payload = self._request(
            "GET", f"/api/v2/dags/{dag_id}/dagRuns/{quoted}/taskInstances/{task_id}/logs/{try_number}?full_content=true"
        )
        lines = []
        for entry in payload.get("content", []):
            if isinstance(entry, dict):
                event = str(entry.get("event", ""))
                if event.startswith(("::group::", "::endgroup::")):
                    continue
                lines.append(event)
                for detail in entry.get("error_detail") or []:
                    lines.append(f"{detail.get('exc_type')}: {detail.get('exc_value')}")
            else:
                lines.append(str(entry))
        return "\n".join(lines)

    def xcom(self, dag_id: str, run_id: str, task_id: str, key: str = "return_value"):
        """What a task pushed (its return value by default), as stored."""
        quoted = urllib.parse.quote(run_id, safe="")
        path = f"/api/v2/dags/{dag_id}/dagRuns/{quoted}/taskInstances/{task_id}/xcomEntries/{key}"
        return self._request("GET", path)["value"]

    def set_paused(self, dag_id: str, paused: bool) -> None:
        self._request("PATCH", f"/api/v2/dags/{dag_id}", {"is_paused": paused})

    def trigger(
        self,
        dag_id: str,
        conf: dict | None = None,
        *,
        logical_date: str | None = None,
        data_interval: tuple[str, str] | None = None,
        run_id: str | None = None,
    ) -> dict:
        body: dict = {"conf": conf or {}, "logical_date": logical_date}
        if data_interval:
            body["data_interval_start"], body["data_interval_end"] = data_interval
        if run_id:
            body["dag_run_id"] = run_id
        return self._request("POST", f"/api/v2/dags/{dag_id}/dagRuns", body)

    def run_state(self, dag_id: str, run_id: str) -> dict:
        return self._request("GET", f"/api/v2/dags/{dag_id}/dagRuns/{urllib.parse.quote(run_id, safe='')}")

    def wait_for_run(self, dag_id: str, run_id: str, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check_alive()
            run = self.run_state(dag_id, run_id)
            if run["state"] in ("success", "failed"):
                return run
            time.sleep(3)
        raise TimeoutError(f"run {run_id} of {dag_id} did not finish within {timeout:.0f} s")

    def run_dag(
        self,
        dag_id: str,
        conf: dict | None = None,
        *,
        logical_date: str | None = None,
        data_interval: tuple[str, str] | None = None,
        timeout: float = 1800,
    ) -> dict:
        """Triggers one run, lets the scheduler take it (unpausing the DAG meanwhile) and waits for its end."""
        run = self.trigger(dag_id, conf, logical_date=logical_date, data_interval=data_interval)
        self.set_paused(dag_id, False)
        try:
            return self.wait_for_run(dag_id, run["dag_run_id"], timeout)
        finally:
            self.set_paused(dag_id, True)

    def run_latest_interval(self, dag_id: str, conf: dict | None = None, timeout: float = 1800) -> dict:
        """Runs the DAG for its latest complete interval, the way the nightly schedule does, and waits.

        When that night has not run yet, the triggered run takes its logical date and data interval,
        so the scheduler, finding the night taken, creates no scheduled run beside it (one run, not
        two in a row on the same connections). When the night has already run (an earlier test took
        it), a plain manual run is triggered.
        """
        dag = self.wait_for_dag(dag_id)
        due = dag.get("next_dagrun_run_after")
        if due and _parse_time(due) <= time.time():
            try:
                return self.run_dag(
                    dag_id,
                    conf,
                    logical_date=dag["next_dagrun_logical_date"],
                    data_interval=(dag["next_dagrun_data_interval_start"], dag["next_dagrun_data_interval_end"]),
                    timeout=timeout,
                )
            except ApiError as error:
                if error.status != 409:
                    raise
        return self.run_dag(dag_id, conf, timeout=timeout)

    def backfill(
        self,
        dag_id: str,
        from_date: str,
        to_date: str,
        conf: dict | None = None,
        *,
        run_backwards: bool = False,
        reprocess: str = "none",
        use_cli: bool = False,
        timeout: float = 1800,
    ) -> list[dict]:
        """Backfills the nights from ``from_date`` to ``to_date`` (inclusive logical dates) the way a
        data engineer does: ``airflow backfill create`` (``use_cli``) or the REST call behind the UI's
        backfill form. The scheduler runs them (the DAG is unpaused meanwhile); returns the runs of
        those nights in the order they ran, once the backfill is complete."""
        self.take_due_night(dag_id)
        if use_cli:
            args = [_airflow_bin(), "backfill", "create", "--dag-id", dag_id, "--from-date", from_date]
            args += ["--to-date", to_date, "--reprocess-behavior", reprocess, "--max-active-runs", "1"]
            args += ["--dag-run-conf", json.dumps(conf or {})] + (["--run-backwards"] if run_backwards else [])
            known = {b["id"] for b in self.backfills(dag_id)}
            result = subprocess.run(args, env=self.env, capture_output=True, text=True, timeout=300)
            if result.returncode != 0:
                raise RuntimeError(f"airflow backfill create failed:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
            backfill_id = max(b["id"] for b in self.backfills(dag_id) if b["id"] not in known)
        else:
            body = {
                "dag_id": dag_id,
                "from_date": f"{from_date}T00:00:00Z",
                "to_date": f"{to_date}T00:00:00Z",
                "run_backwards": run_backwards,
                "dag_run_conf": conf or {},
                "reprocess_behavior": reprocess,
                "max_active_runs": 1,
            }
            backfill_id = self._request("POST", "/api/v2/backfills", body)["id"]
        self.set_paused(dag_id, False)
        try:
            deadline = time.monotonic() + timeout
            while self._request("GET", f"/api/v2/backfills/{backfill_id}")["completed_at"] is None:
                self.check_alive()
                if time.monotonic() > deadline:
                    raise TimeoutError(f"backfill {backfill_id} of {dag_id} did not complete within {timeout:.0f} s")
                time.sleep(3)
        finally:
            self.set_paused(dag_id, True)
        runs = [
            run
            for run in self.dag_runs(dag_id)
            if run.get("logical_date") and from_date <= run["logical_date"][:10] <= to_date
        ]
        return sorted(runs, key=lambda run: run["start_date"] or "")

    def take_due_night(self, dag_id: str) -> None:
        """Unpausing lets the scheduler create the latest night's run if nobody has run it yet; a dry
        run with that night's logical date takes it first, so only the runs asked for write."""
        dag = self.wait_for_dag(dag_id)
        due = dag.get("next_dagrun_run_after")
        night = dag.get("next_dagrun_logical_date")
        if not (due and night and _parse_time(due) <= time.time()):
            return
        if any(run.get("logical_date") == night for run in self.dag_runs(dag_id)):
            return
        interval = (dag["next_dagrun_data_interval_start"], dag["next_dagrun_data_interval_end"])
        self.run_dag(dag_id, {"dry_run": True}, logical_date=night, data_interval=interval, timeout=600)

    def backfills(self, dag_id: str) -> list[dict]:
        return self._request("GET", f"/api/v2/backfills?dag_id={urllib.parse.quote(dag_id)}&limit=100")["backfills"]

    def dag_runs(self, dag_id: str) -> list[dict]:
        return self._request("GET", f"/api/v2/dags/{dag_id}/dagRuns?limit=1000")["dag_runs"]

    def task_instances(self, dag_id: str, run_id: str) -> list[dict]:
        quoted = urllib.parse.quote(run_id, safe="")
        return self._request("GET", f"/api/v2/dags/{dag_id}/dagRuns/{quoted}/taskInstances?limit=1000")[
            "task_instances"
        ]


def _parse_time(value: str) -> float:
    import datetime as dt

    return dt.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


class ApiError(RuntimeError):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def _wait_until_gone(groups: set[int], timeout: float = 15) -> None:
    """SIGKILL is delivered, not awaited: on a loaded machine a killed worker was still listed a moment
    later. Waits until no live (non-zombie) process is left in these process groups."""
    import psutil

    deadline = time.monotonic() + timeout
    while groups and time.monotonic() < deadline:
        alive = False
        for process in psutil.process_iter(["pid", "status"]):
            with contextlib.suppress(ProcessLookupError, psutil.Error):
                if process.info["status"] != psutil.STATUS_ZOMBIE and os.getpgid(process.info["pid"]) in groups:
                    alive = True
                    break
        if not alive:
            return
        time.sleep(0.1)
