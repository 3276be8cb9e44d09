"""Shared parts of the benchmarks: the simulator in its own process, and timed call loops.

The simulator runs as `microtopic simulate` in a child process, so its work does
not compete with the client for the benchmark's GIL.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import yaml

API_VERSION = "2024-10-21"
DEPLOYMENT = "bench-deployment"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@contextlib.contextmanager
def simulator_process(config: dict[str, Any]) -> Iterator[str]:
    """Run `microtopic simulate` with `config` on a free port; yield its base URL."""
    port = free_port()
    command = Path(sys.executable).with_name("microtopic")
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "simulator.yaml"
        path.write_text(yaml.safe_dump(config), encoding="utf-8")
        process = subprocess.Popen(
            [str(command), "simulate", "--config", str(path), "--port", str(port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={**os.environ, "MICROTOPIC_LOG_LEVEL": "WARNING"},
        )
        base_url = f"http://127.0.0.1:{port}"
        try:
            _wait_until_up(base_url, process)
            yield base_url
        finally:
            process.terminate()
            process.wait(timeout=10)


def simulator_stats(base_url: str) -> dict[str, Any]:
    response = httpx.get(f"{base_url}/_simulator/stats", timeout=10)
    response.raise_for_status()
    stats: dict[str, Any] = response.json()
    return stats


def reset_simulator(base_url: str) -> None:
    httpx.post(f"{base_url}/_simulator/reset", timeout=10).raise_for_status()


def percentile(ordered: list[float], share: float) -> float:
    """Return the `share` percentile (0-100) of sorted values, nearest rank."""
    if not ordered:
        return float("nan")
    rank = max(0, min(len(ordered) - 1, round(share / 100 * len(ordered)) - 1))
    return ordered[rank]


def _wait_until_up(base_url: str, process: subprocess.Popen[bytes]) -> None:
    give_up = time.monotonic() + 30
    while time.monotonic() < give_up:
        if process.poll() is not None:
            raise RuntimeError(f"the simulator exited with status {process.returncode}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{base_url}/_simulator/stats", timeout=1).is_success:
                return
        time.sleep(0.1)
    raise RuntimeError("the simulator did not start within 30 s")
