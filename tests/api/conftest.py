"""The real app under uvicorn on 127.0.0.1, with three Azure keys served by the simulator.

Each test gets a fresh simulator, a fresh SQLite file and a fresh app. Tests call the
app over HTTP with httpx, which keeps every response for the secret scans.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from microtopic.config import CacheConfig, GatewayConfig, KeyConfig, ProviderKind, Settings
from microtopic.simulator import SimulatedKey, SimulatorConfig, SimulatorServer
from tests.api.support import (
    API_VERSION,
    DEPLOYMENT,
    FAST_GATEWAY,
    KEY_NAMES,
    SimulatorControl,
    new_secret,
)
from tests.app_server import AppServer


@pytest.fixture
def key_secrets() -> dict[str, str]:
    """A new secret for each simulator key, by key name."""
    return {name: new_secret() for name in KEY_NAMES}


@pytest.fixture
def simulator_latency_s() -> float:
    """Delay of each successful simulator reply, in seconds. A test class may override it."""
    return 0.0


@pytest.fixture
def simulator(key_secrets: dict[str, str], simulator_latency_s: float) -> Iterator[SimulatorServer]:
    config = SimulatorConfig(
        keys=[SimulatedKey(name=name, secret=secret) for name, secret in key_secrets.items()],
        latency_s=simulator_latency_s,
        seed=7,
    )
    with SimulatorServer(config) as server:
        yield server


@pytest.fixture
def gateway_config() -> GatewayConfig:
    """Limits of the app's gateway. A test class may override it."""
    return FAST_GATEWAY


@pytest.fixture
def database_path(tmp_path: Path) -> Path:
    return tmp_path / "t.db"


@pytest.fixture
def tokens_per_minute() -> int | None:
    """Token quota of each key as the pool counts it; None for no limit."""
    return None


@pytest.fixture
def gateway_api_keys() -> list[str]:
    """Tokens that the OpenAI-compatible endpoints accept; none turns them off."""
    return []


@pytest.fixture
def cache_config() -> CacheConfig:
    """The content cache, off: most tests here send one body many times and count the
    generations. The tests of the cache turn it on."""
    return CacheConfig(enabled=False)


@pytest.fixture
def settings(
    simulator: SimulatorServer,
    key_secrets: dict[str, str],
    gateway_config: GatewayConfig,
    tokens_per_minute: int | None,
    gateway_api_keys: list[str],
    cache_config: CacheConfig,
    database_path: Path,
) -> Settings:
    keys = [
        KeyConfig(
            name=name,
            provider=ProviderKind.AZURE,
            endpoint=simulator.azure_endpoint,
            deployment=DEPLOYMENT,
            api_version=API_VERSION,
            secret=secret,
            tokens_per_minute=tokens_per_minute,
        )
        for name, secret in key_secrets.items()
    ]
    return Settings(
        keys=keys,
        gateway=gateway_config,
        gateway_api_keys=gateway_api_keys,
        cache=cache_config,
        database_url=f"sqlite+aiosqlite:///{database_path}",
    )


@pytest.fixture
def app_server(settings: Settings) -> Iterator[AppServer]:
    with AppServer(settings) as server:
        yield server


@pytest.fixture
def received() -> list[httpx.Response]:
    """Every response `client` received during the test, with its body read."""
    return []


@pytest.fixture
async def client(
    app_server: AppServer, received: list[httpx.Response]
) -> AsyncIterator[httpx.AsyncClient]:
    async def keep(response: httpx.Response) -> None:
        await response.aread()
        received.append(response)

    async with httpx.AsyncClient(
        base_url=app_server.base_url, timeout=30.0, event_hooks={"response": [keep]}
    ) as http:
        yield http


@pytest.fixture
async def simulator_control(simulator: SimulatorServer) -> AsyncIterator[SimulatorControl]:
    control = SimulatorControl(simulator.base_url)
    try:
        yield control
    finally:
        await control.aclose()
