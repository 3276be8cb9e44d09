"""Microtopic commands run as child processes on 127.0.0.1, for tests across processes."""

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

MICROTOPIC = str(Path(sys.executable).with_name("microtopic"))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class ServiceProcess:
    """`microtopic ARGS` in a child process, its output in `log_path`, as a context manager.

    Entering waits until `ready_url` responds (when given); leaving stops the
    process with SIGTERM, then SIGKILL after `stop_timeout_s`.
    """

    def __init__(
        self,
        args: list[str],
        log_path: Path,
        *,
        ready_url: str | None = None,
        env: dict[str, str] | None = None,
        start_timeout_s: float = 30.0,
        stop_timeout_s: float = 10.0,
    ) -> None:
        self.args = args
        self.log_path = log_path
        self._ready_url = ready_url
        self._env = {**os.environ, **(env or {})}
        self._start_timeout_s = start_timeout_s
        self._stop_timeout_s = stop_timeout_s
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def process(self) -> subprocess.Popen[bytes]:
        if self._process is None:
            raise RuntimeError("The process has not started. Use it in a `with` block.")
        return self._process

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
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                [MICROTOPIC, *self.args], stdout=log, stderr=subprocess.STDOUT, env=self._env
            )
        if self._ready_url is not None:
            self._wait_until_ready(self._ready_url)

    def stop(self) -> None:
        process = self._process
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(self._stop_timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(self._stop_timeout_s)

    def kill(self) -> None:
        """Stop the process at once with SIGKILL, as a crash would."""
        self.process.kill()
        self.process.wait(self._stop_timeout_s)

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def _wait_until_ready(self, url: str) -> None:
        give_up = time.monotonic() + self._start_timeout_s
        while time.monotonic() < give_up:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"`microtopic {' '.join(self.args)}` exited with status "
                    f"{self.process.returncode}:\n{self.log()[-3000:]}"
                )
            try:
                if httpx.get(url, timeout=1.0).status_code < 500:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(
            f"`microtopic {' '.join(self.args)}` did not answer {url} within "
            f"{self._start_timeout_s} s:\n{self.log()[-3000:]}"
        )


class AppProcess(ServiceProcess):
    """`microtopic serve` with `config_path` on a free port; `base_url` is where it listens."""

    def __init__(self, config_path: Path, log_path: Path, *, start_timeout_s: float = 30.0) -> None:
        port = free_port()
        self.base_url = f"http://127.0.0.1:{port}"
        super().__init__(
            ["serve", "--port", str(port), "--config", str(config_path)],
            log_path,
            ready_url=f"{self.base_url}/healthz",
            start_timeout_s=start_timeout_s,
        )
