"""Run-time state of the simulator: faults, quota windows, random draws and counters per key.

The state lives in the server's event loop and is changed only by request handlers,
which run one at a time between awaits, so it needs no lock. Checking a quota and
charging it happen in one synchronous call, so two requests can never both take the
last slot of a window.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from microtopic.simulator.config import SimulatedKey, SimulatorConfig
from microtopic.simulator.faults import (
    RATE_LIMIT_FAULT_KINDS,
    Fault,
    FaultKind,
    draw_fault_kind,
)
from microtopic.simulator.quota import KeyQuota, QuotaRejection, SimulatedClock, SlidingWindow


class Interruption(StrEnum):
    """The reason a call ended without a complete response."""

    CONNECTION_RESET = "connection_reset"
    CLIENT_DISCONNECT = "client_disconnect"


@dataclass
class _ActiveFault:
    fault: Fault
    remaining: int | None

    def as_dict(self) -> dict[str, Any]:
        return {**self.fault.model_dump(mode="json"), "remaining": self.remaining}


@dataclass
class CallCounts:
    """The outcomes of the chat calls of one key, or of all calls.

    `by_status` counts complete responses by HTTP status, and `interruptions` the calls
    that ended without one. `calls` is the sum of both.
    """

    calls: int = 0
    successes: int = 0
    by_status: Counter[int] = field(default_factory=Counter)
    interruptions: Counter[Interruption] = field(default_factory=Counter)
    faults: Counter[FaultKind] = field(default_factory=Counter)
    quota_rejections: int = 0

    def add(self, outcome: int | Interruption) -> None:
        """Count one call that ended with `outcome`: an HTTP status or an interruption."""
        self.calls += 1
        if isinstance(outcome, Interruption):
            self.interruptions[outcome] += 1
            return
        self.by_status[outcome] += 1
        if outcome == 200:
            self.successes += 1

    def as_dict(self) -> dict[str, Any]:
        """Return the counts as JSON, with status codes as string keys."""
        injected_429s = sum(self.faults[kind] for kind in RATE_LIMIT_FAULT_KINDS)
        return {
            "calls": self.calls,
            "successes": self.successes,
            "status_counts": {str(code): count for code, count in sorted(self.by_status.items())},
            "rate_limited": {"quota": self.quota_rejections, "injected": injected_429s},
            "faults": {str(kind): count for kind, count in sorted(self.faults.items())},
            "interrupted": {str(kind): self.interruptions[kind] for kind in Interruption},
        }


class SimulatorState:
    """The faults, quotas and call counts of every configured key, and the random draws.

    `monotonic` is the real clock in seconds that simulated time is derived from.
    """

    def __init__(
        self, config: SimulatorConfig, *, monotonic: Callable[[], float] = time.monotonic
    ) -> None:
        self._config = config
        self._keys = {key.name: key for key in config.keys}
        self._fault_rates = {key.name: config.fault_rates_for(key) for key in config.keys}
        self.clock = SimulatedClock(config.time_scale, monotonic)
        self.reset()

    def reset(self) -> None:
        """Clear every fault, counter and quota window, and restart the random draws."""
        self._faults: dict[str, _ActiveFault] = {}
        self._counts = {name: CallCounts() for name in self._keys}
        self._total = CallCounts()
        self._quotas = {name: self._new_quota(key) for name, key in self._keys.items()}
        self._completions_started = 0
        self._fault_rng = self._new_rng("faults")
        self._latency_rng = self._new_rng("latency")

    def has_key(self, key_name: str) -> bool:
        """Return whether `key_name` is a configured key."""
        return key_name in self._keys

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

    def take_fault(self, key_name: str, kinds: frozenset[FaultKind]) -> Fault | None:
        """Return the fault of one call with the key if it is one of `kinds`, and count it.

        The fault set through the control API comes first and uses up one of its `count`.
        Otherwise a fault is drawn from the key's `fault_rates`.
        """
        fault = self._take_set_fault(key_name, kinds)
        if fault is None:
            drawn = draw_fault_kind(self._fault_rates[key_name], kinds, self._fault_rng)
            fault = None if drawn is None else Fault(kind=drawn)
        if fault is not None:
            self._counts[key_name].faults[fault.kind] += 1
            self._total.faults[fault.kind] += 1
        return fault

    def admit(
        self, key_name: str, charge_tokens: int, at_s: float | None = None
    ) -> QuotaRejection | None:
        """Charge one request to the key's quotas as of `at_s` (default now), or say why not.

        `at_s` must not be earlier than any earlier admission's time.
        """
        now_s = self.clock.now_s() if at_s is None else at_s
        rejection = self._quotas[key_name].admit(now_s, charge_tokens)
        if rejection is not None:
            self._counts[key_name].quota_rejections += 1
            self._total.quota_rejections += 1
        return rejection

    def quota(self, key_name: str) -> KeyQuota:
        """Return the request and token windows of the key."""
        return self._quotas[key_name]

    def rate_limit_headers(self, key_name: str) -> dict[str, str]:
        """Return the key's `x-ratelimit-*` headers as of now, none for a key without quotas."""
        return self._quotas[key_name].rate_limit_headers(self.clock.now_s())

    def draw_latency_s(self, completion_tokens: int) -> float:
        """Draw the delay in real seconds of a 200 reply with `completion_tokens` tokens."""
        config = self._config
        delay_s = config.latency_s + config.latency_per_output_token_s * completion_tokens
        if config.latency_jitter == 0:
            return delay_s
        factor = self._latency_rng.uniform(1 - config.latency_jitter, 1 + config.latency_jitter)
        return delay_s * factor

    def record(self, key_name: str | None, outcome: int | Interruption) -> None:
        """Count one chat call; `key_name` is None when no configured key matched."""
        if key_name is not None:
            self._counts[key_name].add(outcome)
        self._total.add(outcome)

    def stats(self) -> dict[str, Any]:
        """Return the counts, quota windows and active fault of each key, and the totals."""
        now_s = self.clock.now_s()
        keys = {}
        for name in self._keys:
            quota = self._quotas[name]
            active = self._faults.get(name)
            keys[name] = {
                **self._counts[name].as_dict(),
                "requests": _window_stats(quota.requests, now_s),
                "tokens": _window_stats(quota.tokens, now_s),
                "fault": None if active is None else active.as_dict(),
            }
        return {
            "time_scale": self.clock.time_scale,
            "simulated_time_s": now_s,
            "keys": keys,
            "total": self._total.as_dict(),
        }

    def _take_set_fault(self, key_name: str, kinds: frozenset[FaultKind]) -> Fault | None:
        active = self._faults.get(key_name)
        if active is None or active.fault.kind not in kinds:
            return None
        if active.remaining is not None:
            active.remaining -= 1
            if active.remaining == 0:
                del self._faults[key_name]
        return active.fault

    def _new_quota(self, key: SimulatedKey) -> KeyQuota:
        requests = SlidingWindow(self._config.rpm_window_s, self._config.request_limit(key))
        tokens = SlidingWindow(self._config.tpm_window_s, self._config.token_limit(key))
        return KeyQuota(requests, tokens)

    def _new_rng(self, purpose: str) -> random.Random:
        # One generator per purpose, so that the latency drawn for a call does not change
        # which faults later calls get.
        if self._config.seed is None:
            return random.Random()
        return random.Random(f"{self._config.seed}:{purpose}")


def _window_stats(window: SlidingWindow, now_s: float) -> dict[str, Any]:
    return {
        "admitted": window.admitted,
        "limit": window.limit,
        "window_s": window.window_s,
        "peak": window.peak,
        "in_window": window.used(now_s),
        "remaining": window.remaining(now_s),
    }
