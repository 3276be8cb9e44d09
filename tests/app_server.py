"""The real app served by uvicorn on 127.0.0.1 from a background thread, for tests."""

from __future__ import annotations

import threading
import time
from types import TracebackType
from typing import Self

import uvicorn

from microtopic.api import create_app
from microtopic.config import Settings

HOST = "127.0.0.1"
_POLL_INTERVAL_S = 0.01


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
