"""The `microtopic` command run in-process, with a config file whose keys the simulator serves.

Each test gets a fresh simulator with three keys, a YAML config file pointing at it and a
new SQLite file.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from microtopic.config import (
    CONFIG_ENV_VAR,
    DATABASE_URL_ENV_VAR,
    LOG_LEVEL_ENV_VAR,
    REDIS_URL_ENV_VAR,
)
from microtopic.simulator import SimulatedKey, SimulatorConfig, SimulatorServer
from tests.cli.support import API_VERSION, DEPLOYMENT, KEY_NAMES, Cli


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Clear the variables that would override the config file or pick another one."""
    for name in (CONFIG_ENV_VAR, DATABASE_URL_ENV_VAR, LOG_LEVEL_ENV_VAR, REDIS_URL_ENV_VAR):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def cli() -> Cli:
    return Cli()


@pytest.fixture
def key_secrets() -> dict[str, str]:
    """A new made-up secret for each simulator key, by key name."""
    return {name: "sk-test-" + uuid.uuid4().hex for name in KEY_NAMES}


@pytest.fixture
def simulator(key_secrets: dict[str, str]) -> Iterator[SimulatorServer]:
    config = SimulatorConfig(
        keys=[SimulatedKey(name=name, secret=secret) for name, secret in key_secrets.items()],
        seed=7,
    )
    with SimulatorServer(config) as server:
        yield server


@pytest.fixture
def database_path(tmp_path: Path) -> Path:
    return tmp_path / "cli.db"


@pytest.fixture
def config_file(
    tmp_path: Path, simulator: SimulatorServer, key_secrets: dict[str, str], database_path: Path
) -> Path:
    """A YAML config with an Azure key per simulator key and retries 10 ms apart."""
    config = {
        "database_url": f"sqlite+aiosqlite:///{database_path}",
        "gateway": {
            "retry": {
                "first_request": {"retries": 2, "delay_s": 0.01},
                "retry_request": {"retries": 3, "delay_s": 0.01},
            }
        },
        "keys": [
            {
                "name": name,
                "provider": "azure",
                "endpoint": simulator.azure_endpoint,
                "deployment": DEPLOYMENT,
                "api_version": API_VERSION,
                "secret": secret,
            }
            for name, secret in key_secrets.items()
        ],
    }
    path = tmp_path / "microtopic.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path
