"""Run-time state of the simulator: the fault set on each key and the calls counted.

The state lives in the server's event loop and is changed only by request handlers,
which run one at a time between awaits, so it needs no lock.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator


class FaultKind(StrEnum):
    """Kind of injected fault; `none` clears the key's fault."""

    NONE = "none"
    RATE_LIMIT = "rate_limit"
    SERVER_ERROR = "server_error"
    REVOKED = "revoked"


class Fault(BaseModel):
    """A fault to inject into the calls made with one key, as sent to the control API.

    `count` is how many of the following calls fail; None keeps the fault until it is
    changed. `retry_after_s` and `retry_after_ms` are the hints a `rate_limit` fault sends.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: FaultKind
    retry_after_s: float | None = Field(default=None, ge=0, le=86_400)
    retry_after_ms: int | None = Field(default=None, ge=0, le=86_400_000)
    count: int | None = Field(default=None, ge=1)

    @field_validator("retry_after_s")
    @classmethod
    def _retry_after_is_finite(cls, retry_after_s: float | None) -> float | None:
        if retry_after_s is not None and not math.isfinite(retry_after_s):
            raise ValueError("must be a finite number of seconds")
        return retry_after_s

    def retry_after_whole_s(self) -> int | None:
        """Return the delay for the `retry-after` header in whole seconds, rounded up."""
        if self.retry_after_s is not None:
            return math.ceil(self.retry_after_s)
        if self.retry_after_ms is not None:
            return math.ceil(self.retry_after_ms / 1000)
        return None


@dataclass
class _ActiveFault:
    fault: Fault
    remaining: int | None

    def as_dict(self) -> dict[str, Any]:
        return {**self.fault.model_dump(mode="json"), "remaining": self.remaining}


@dataclass
class CallCounts:
    """Calls received, successful calls (status 200), and calls by HTTP status code."""

    calls: int = 0
    successes: int = 0
    by_status: Counter[int] = field(default_factory=Counter)

    def add(self, status_code: int) -> None:
        """Count one call whose response had `status_code`."""
        self.calls += 1
        self.by_status[status_code] += 1
        if status_code == 200:
            self.successes += 1

    def as_dict(self) -> dict[str, Any]:
        """Return the counts as JSON, with status codes as string keys."""
        return {
            "calls": self.calls,
            "successes": self.successes,
            "status_counts": {str(code): count for code, count in sorted(self.by_status.items())},
        }


class SimulatorState:
    """The faults and call counts of every configured key, by key name."""

    def __init__(self, key_names: Iterable[str]) -> None:
        self._key_names = tuple(key_names)
        self._faults: dict[str, _ActiveFault] = {}
        self._counts = {name: CallCounts() for name in self._key_names}
        self._total = CallCounts()
        self._completions_started = 0

    def has_key(self, key_name: str) -> bool:
        """Return whether `key_name` is a configured key."""
        return key_name in self._counts

    def next_completion_number(self) -> int:
        """Return the sequence number of the next completion and advance it.

        Numbers start at 0 when the simulator starts and again after each reset.
        """
        number = self._completions_started
        self._completions_started += 1
        return number

    def set_fault(self, key_name: str, fault: Fault) -> None:
        """Inject `fault` into the following calls with the key; kind `none` clears it."""
        if fault.kind is FaultKind.NONE:
            self._faults.pop(key_name, None)
            return
        self._faults[key_name] = _ActiveFault(fault, remaining=fault.count)

    def take_fault(self, key_name: str) -> Fault | None:
        """Return the fault for one call with the key, using up one of its `count`."""
        active = self._faults.get(key_name)
        if active is None:
            return None
        if active.remaining is not None:
            active.remaining -= 1
            if active.remaining == 0:
                del self._faults[key_name]
        return active.fault

    def record(self, key_name: str | None, status_code: int) -> None:
        """Count one chat call; `key_name` is None when no configured key matched."""
        if key_name is not None:
            self._counts[key_name].add(status_code)
        self._total.add(status_code)

    def stats(self) -> dict[str, Any]:
        """Return the counts and active fault of each key, and the totals, as JSON."""
        keys = {}
        for name in self._key_names:
            active = self._faults.get(name)
            keys[name] = {
                **self._counts[name].as_dict(),
                "fault": None if active is None else active.as_dict(),
            }
        return {"keys": keys, "total": self._total.as_dict()}

    def reset(self) -> None:
        """Clear every fault and counter."""
        self._faults.clear()
        self._counts = {name: CallCounts() for name in self._key_names}
        self._total = CallCounts()
        self._completions_started = 0
