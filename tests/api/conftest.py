"""The real app under uvicorn on 127.0.0.1, with three Azure keys served by the simulator.

Each test gets a fresh simulator, a fresh SQLite file and a fresh app. Tests call the
app over HTTP with httpx, which keeps every response for the secret scans.
"""

from __future__ import annotations

import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from types import TracebackType
from typing import Self

import httpx
import pytest
import uvicorn

from microtopic.api import create_app
from microtopic.config import (
    GatewayConfig,
    KeyConfig,
    ProviderKind,
    RetryConfig,
    RetryStrategy,
    Settings,
)
from microtopic.simulator import SimulatedKey, SimulatorConfig, SimulatorServer
from tests.api.support import API_VERSION, DEPLOYMENT, KEY_NAMES, SimulatorControl, new_secret

HOST = "127.0.0.1"
_POLL_INTERVAL_S = 0.01

# The default retry counts, with delays short enough for tests.
FAST_GATEWAY = GatewayConfig(
    retry=RetryConfig(
        first_request=RetryStrategy(retries=2, delay_s=0.01),
        retry_request=RetryStrategy(retries=3, delay_s=0.01),
    )
)


class AppServer:
    """The app of `settings` served by uvicorn on a background thread, as a context manager.

    The lifespan runs as in production, so entering starts the runtime (database
    upgrade, key pool, gateway) and exiting closes it.
    """

    def __init__(
        self, settings: Settings, *, start_timeout_s: float = 10.0, stop_timeout_s: float = 10.0
    ) -> None:
        config = uvicorn.Config(
            create_app(settings),
            host=HOST,
            port=0,
            loop="asyncio",
            http="h11",
            ws="none",
            lifespan="on",
            log_config=None,
            access_log=False,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name="microtopic-app", daemon=True)
        self._start_timeout_s = start_timeout_s
        self._stop_timeout_s = stop_timeout_s
        self._port: int | None = None

    @property
    def base_url(self) -> str:
        if self._port is None:
            raise RuntimeError("The app server has not started. Use it in a `with` block.")
        return f"http://{HOST}:{self._port}"

    def __enter__(self) -> Self:
        self._thread.start()
        deadline = time.monotonic() + self._start_timeout_s
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self._stop()
                raise RuntimeError(
                    f"The app did not start within {self._start_timeout_s} s. "
                    "The log of its lifespan or of uvicorn says why."
                )
            time.sleep(_POLL_INTERVAL_S)
        self._port = int(self._server.servers[0].sockets[0].getsockname()[1])
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._stop()

    def _stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(self._stop_timeout_s)
        if self._thread.is_alive():
            self._server.force_exit = True
            self._thread.join(self._stop_timeout_s)
        if self._thread.is_alive():
            raise RuntimeError(f"The app did not stop within {2 * self._stop_timeout_s} s.")


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
def settings(
    simulator: SimulatorServer,
    key_secrets: dict[str, str],
    gateway_config: GatewayConfig,
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
        )
        for name, secret in key_secrets.items()
    ]
    return Settings(
        keys=keys, gateway=gateway_config, database_url=f"sqlite+aiosqlite:///{database_path}"
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
