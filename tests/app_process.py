"""`microtopic serve` in a child process on 127.0.0.1, for tests that need separate processes."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import Self

import httpx

HOST = "127.0.0.1"
_POLL_INTERVAL_S = 0.1


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


class AppProcess:
    """`microtopic serve --config CONFIG` in a child process, as a context manager.

    Entering waits until `/healthz` responds; exiting sends SIGTERM, so the lifespan
    closes the runtime, and kills the process if it does not stop in time. Its
    output goes to `log_path`, which a failing test can read.
    """

    def __init__(self, config_path: Path, log_path: Path, *, start_timeout_s: float = 30.0) -> None:
        self._config_path = config_path
        self._log_path = log_path
        self._start_timeout_s = start_timeout_s
        self._port = free_port()
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self._port}"

    def log(self) -> str:
        return self._log_path.read_text(encoding="utf-8", errors="replace")

    def __enter__(self) -> Self:
        command = [
            sys.executable,
            "-c",
            "from microtopic.cli.main import main; main()",
            "serve",
            "--port",
            str(self._port),
            "--config",
            str(self._config_path),
        ]
        with self._log_path.open("wb") as log:
            self._process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ)
            )
        self._wait_until_healthy()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._stop()

    def _wait_until_healthy(self) -> None:
        assert self._process is not None
        deadline = time.monotonic() + self._start_timeout_s
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                break
            try:
                if httpx.get(f"{self.base_url}/healthz", timeout=1.0).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(_POLL_INTERVAL_S)
        self._stop()
        raise RuntimeError(
            f"`microtopic serve` did not answer within {self._start_timeout_s} s. "
            f"Its output:\n{self.log()}"
        )

    def _stop(self) -> None:
        if self._process is None or self._process.poll() is not None:
            return
        self._process.send_signal(signal.SIGTERM)
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait(timeout=10)
