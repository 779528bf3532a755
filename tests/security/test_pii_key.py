"""The PII key: where config reads it, its local file, and its way into dbt's sessions, without a database."""

from __future__ import annotations

import json
import stat

import pytest
import yaml

from include.pacbook import config
from include.pacbook.privileges import dbt_session_env, local_pii_key, pii_key_options

KEY = "key-of-this-test-only-0123456789"
KEY_VARIABLE = f"AIRFLOW_CONN_{config.PII_KEY_CONN_ID.upper()}"


def test_local_key_is_generated_once_and_private(tmp_path):
    path = tmp_path / "secrets" / "pii_key"
    key = local_pii_key(path)
    assert len(key) >= 40 and local_pii_key(path) == key
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert local_pii_key(tmp_path / "other" / "pii_key") != key


def test_key_options_escape_what_libpq_would_split():
    assert pii_key_options("with space and \\ backslash") == r"-c pacbook.pii_key=with\ space\ and\ \\\ backslash"
    assert pii_key_options("a" * 16, previous_key="b" * 16) == (
        f"-c pacbook.pii_key={'a' * 16} -c pacbook.pii_key_previous={'b' * 16}"
    )


def test_short_keys_are_refused():
    with pytest.raises(ValueError, match="at least 16"):
        pii_key_options("too-short")


@pytest.mark.parametrize(
    "given",
    [json.dumps({"conn_type": "generic", "password": KEY}), f"generic://:{KEY}@"],
    ids=["json", "uri"],
)
def test_config_reads_the_key_from_the_airflow_connection(monkeypatch, given):
    monkeypatch.setenv(KEY_VARIABLE, given)
    assert config.pii_encryption_key() == KEY


def test_a_missing_key_stops_with_the_variable_named(monkeypatch):
    monkeypatch.delenv(KEY_VARIABLE, raising=False)
    with pytest.raises(config.MissingConnectionError, match=KEY_VARIABLE):
        config.pii_encryption_key()


def test_session_env_keeps_options_already_given():
    env = dbt_session_env(KEY, environ={"PGOPTIONS": "-c statement_timeout=0"})
    assert env == {"PGOPTIONS": f"-c statement_timeout=0 -c jit=off -c pacbook.pii_key={KEY}"}


def test_cosmos_gives_dbt_the_key_in_its_environment_not_in_its_profile(monkeypatch):
    """What Cosmos hands to dbt in a task: the rendered profile holds neither the key nor the password;
    the environment does."""
    import airflow  # noqa: F401 - first, before cosmos (PITFALLS.md #13)

    from include.pacbook import dbt_groups

    monkeypatch.setenv("AIRFLOW_CONN_PACBOOK_WAREHOUSE", "postgresql://transformer:secret-pw@db.example:5432/wh")
    monkeypatch.setenv(KEY_VARIABLE, json.dumps({"conn_type": "generic", "password": KEY}))
    monkeypatch.delenv("PGOPTIONS", raising=False)
    # Whether the login may take the transformer role is asked of the server, which is not there.
    monkeypatch.setattr("include.pacbook.session_roles.role_to_take", lambda uri, part: part.role)
    mapping = dbt_groups.dbt_profile().profile_mapping
    rendered = yaml.safe_dump(mapping.profile)
    assert KEY not in rendered and "secret-pw" not in rendered, rendered
    assert "db.example" in rendered and "transformer" in rendered  # the profile is the one for this connection
    role = config.WAREHOUSE_TRANSFORM_ROLE
    assert mapping.env_vars["PGOPTIONS"] == f"-c jit=off -c role={role} -c pacbook.pii_key={KEY}"


def test_dbt_cli_env_carries_the_key(monkeypatch):
    from include.pacbook.dbt_cli import dbt_env

    monkeypatch.setenv(KEY_VARIABLE, json.dumps({"conn_type": "generic", "password": KEY}))
    monkeypatch.delenv("PGOPTIONS", raising=False)
    env = dbt_env("postgresql://transformer:secret-pw@db.example:5432/wh")
    assert env["PGOPTIONS"] == f"-c jit=off -c pacbook.pii_key={KEY}" and env["PACBOOK_DBT_DBNAME"] == "wh"
