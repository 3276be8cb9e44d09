"""Helpers shared by the simulator tests: a clock moved by hand and control API calls."""

from __future__ import annotations

import threading
from typing import Any

import httpx
from openai.types.chat import ChatCompletionMessageParam

USER_PROMPT: list[ChatCompletionMessageParam] = [
    {"role": "user", "content": "Write the lesson. <topic>Linear equations</topic>"}
]


class ManualClock:
    """A monotonic clock in seconds that moves only when a test calls `advance`.

    The server reads it on its own thread, so reads and moves take a lock.
    """

    def __init__(self, start_s: float = 1000.0) -> None:
        self._now_s = start_s
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return self._now_s

    def advance(self, seconds: float) -> None:
        """Move the clock forward by `seconds`."""
        with self._lock:
            self._now_s += seconds


async def set_fault(http: httpx.AsyncClient, key_name: str, **fault: Any) -> None:
    """Inject a fault into the key's next calls through the control API."""
    response = await http.put(f"/_simulator/keys/{key_name}/fault", json=fault)
    response.raise_for_status()


async def key_stats(http: httpx.AsyncClient, key_name: str) -> dict[str, Any]:
    """Return the stats of one key from the control API."""
    response = await http.get("/_simulator/stats")
    response.raise_for_status()
    stats: dict[str, Any] = response.json()["keys"][key_name]
    return stats
