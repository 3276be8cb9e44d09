"""Run the simulator under uvicorn: in a background thread for tests, or in the foreground.

    with SimulatorServer(config) as sim:
        client = openai.AsyncAzureOpenAI(azure_endpoint=sim.azure_endpoint, ...)

Neither configures logging: the caller's entry point does, as for the rest of Microtopic.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import Self

import uvicorn

from microtopic.simulator.app import create_simulator_app
from microtopic.simulator.config import SimulatorConfig

logger = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8100
_POLL_INTERVAL_S = 0.01


class SimulatorStartError(RuntimeError):
    """Raised when the simulator's server does not start listening within its start timeout."""


class SimulatorServer:
    """The simulator served by uvicorn on a background thread, as a context manager.

    With the default port 0 the operating system chooses a free port, and `port` and
    `base_url` contain it once the server has started. `monotonic` is the real clock in
    seconds that the quotas' simulated time is derived from. Tests pass a clock they
    move by hand to make quota windows pass without waiting.

    A call held open by a `hang` fault keeps the server from stopping until its client
    disconnects. After `stop_timeout_s` the exit is forced.
    """

    def __init__(
        self,
        config: SimulatorConfig,
        *,
        host: str = DEFAULT_HOST,
        port: int = 0,
        start_timeout_s: float = 10.0,
        stop_timeout_s: float = 10.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._host = host
        self._start_timeout_s = start_timeout_s
        self._stop_timeout_s = stop_timeout_s
        self._server = uvicorn.Server(_uvicorn_config(config, host, port, monotonic))
        self._thread: threading.Thread | None = None
        self._port: int | None = None

    @property
    def port(self) -> int:
        """The port the server listens on; available once it has started."""
        if self._port is None:
            raise RuntimeError("The simulator has not started. Use it in a `with` block first.")
        return self._port

    @property
    def base_url(self) -> str:
        """The server's URL, such as `http://127.0.0.1:54321`."""
        return f"http://{self._host}:{self.port}"

    @property
    def azure_endpoint(self) -> str:
        """The URL to pass as `azure_endpoint` to the openai SDK's Azure clients."""
        return self.base_url

    @property
    def openai_base_url(self) -> str:
        """The URL to pass as `base_url` to the openai SDK's OpenAI clients."""
        return f"{self.base_url}/v1"

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        """Start the server thread and wait until the server accepts connections.

        Raises SimulatorStartError if the server stops or is not listening within
        `start_timeout_s`, for example because the port is taken.
        """
        if self._thread is not None:
            raise RuntimeError("The simulator was already started; create a new server.")
        self._thread = threading.Thread(target=self._run, name="microtopic-simulator", daemon=True)
        self._thread.start()

        deadline = time.monotonic() + self._start_timeout_s
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise SimulatorStartError(
                    f"The simulator did not start listening on {self._host}:"
                    f"{self._server.config.port} within {self._start_timeout_s} s. "
                    "Check that the port is free."
                )
            time.sleep(_POLL_INTERVAL_S)

        self._port = int(self._server.servers[0].sockets[0].getsockname()[1])
        logger.info("Simulator listening on %s", self.base_url)

    def _run(self) -> None:
        try:
            self._server.run()
        except SystemExit as exc:
            # uvicorn logs why it cannot start (a taken port, for example) and then calls
            # sys.exit, which here only ends this thread. `start` then raises.
            logger.debug("The simulator's server exited with status %s", exc.code)

    def stop(self) -> None:
        """Ask the server to exit and wait for its thread, forcing the exit after a timeout."""
        if self._thread is None:
            return
        self._server.should_exit = True
        self._thread.join(self._stop_timeout_s)
        if self._thread.is_alive():
            logger.warning(
                "The simulator did not stop within %s s, so its exit is forced",
                self._stop_timeout_s,
            )
            self._server.force_exit = True
            self._thread.join(self._stop_timeout_s)


def run_simulator(
    config: SimulatorConfig,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    listener: socket.socket | None = None,
) -> None:
    """Serve the simulator in the foreground until the process receives Ctrl+C or SIGTERM.

    `listener` is a socket already bound to `host` and `port`. Without it, uvicorn binds one.
    """
    server = uvicorn.Server(_uvicorn_config(config, host, port))
    try:
        server.run(sockets=None if listener is None else [listener])
    except KeyboardInterrupt:
        # uvicorn (0.55, Server.capture_signals) shuts down gracefully on Ctrl+C and then
        # raises the signal again, so the interrupt arrives here with nothing to clean up.
        logger.info("The simulator stopped after Ctrl+C")


async def serve_simulator(
    config: SimulatorConfig, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT
) -> None:
    """Serve the simulator on the running event loop until it is cancelled or signalled."""
    server = uvicorn.Server(_uvicorn_config(config, host, port))
    await server.serve()


def _uvicorn_config(
    config: SimulatorConfig,
    host: str,
    port: int,
    monotonic: Callable[[], float] = time.monotonic,
) -> uvicorn.Config:
    return uvicorn.Config(
        create_simulator_app(config, monotonic=monotonic),
        host=host,
        port=port,
        # Plain asyncio and h11 work everywhere and keep tests free of optional extras.
        loop="asyncio",
        http="h11",
        ws="none",
        lifespan="off",
        # None leaves logging alone; the entry point configures it.
        log_config=None,
        access_log=False,
    )
