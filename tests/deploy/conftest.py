from __future__ import annotations

import pytest
import yaml

from tests.deploy.compose_file import COMPOSE_FILE, read_env_file, resolve


@pytest.fixture(scope="session")
def compose_raw() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text())


@pytest.fixture(scope="session")
def compose(compose_raw) -> dict:
    """The compose file as Compose resolves it with the committed .env and nothing else."""
    return resolve(compose_raw, read_env_file())
