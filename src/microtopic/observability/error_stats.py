"""LLM call attempts and their errors by class, per key and in total, over sliding windows.

Every attempt that the gateway reports to its observers counts once. Its outcome is
"success" or the error's stable code, such as `upstream_rate_limited`. Failures that
are not held against the key (`content_filtered`, `truncated_output`,
`request_rejected`) count too, and so does an attempt that the request's deadline
cut short (`upstream_timeout`). The attempts thus match the `llm_call` performance
stats and the `microtopic_llm_call_duration_seconds` metric. An attempt cancelled in
flight reports nothing and is not counted, and health checks are not attempts. So
these counts differ from a key's `errors_by_class`, which counts only the failures
held against the key, health checks included.

The windows are those of the performance stats: the last minute in 5-second slots
and the last 15 minutes in 1-minute slots (`slots.SlidingSlots`), plus a total since
start. A slot contains an attempt count and a count per error code. The codes come from
the fixed set of `UpstreamError` classes in `microtopic.errors`, and the key names
from the config. Memory is thus bounded by the keys plus the total, times 28 slots,
times the number of codes.

The counts belong to this process, like the performance stats.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from microtopic.gateway.events import CallEvent
from microtopic.observability.performance import (
    LONG_SLOT_S,
    LONG_WINDOW_S,
    SHORT_SLOT_S,
    SHORT_WINDOW_S,
)
from microtopic.observability.slots import SlidingSlots

SUCCESS = "success"


@dataclass(frozen=True)
class ErrorCounts:
    """Attempts over a window and the failed ones by error code, sorted by code.

    `window_s` is None for the counts since start.
    """

    window_s: float | None
    attempts: int
    errors: dict[str, int]

    @property
    def failed(self) -> int:
        return sum(self.errors.values())

    def rate(self, count: int) -> float:
        """Return `count` as a share of the attempts, from 0 to 1; 0.0 without attempts."""
        return count / self.attempts if self.attempts else 0.0


@dataclass(frozen=True)
class ErrorWindows:
    """One key's attempts and errors, or all keys', since start and in both windows."""

    since_start: ErrorCounts
    last_1m: ErrorCounts
    last_15m: ErrorCounts


class _Tally:
    """Attempts and failed attempts by error code, in one slot or since start."""

    __slots__ = ("attempts", "errors")

    def __init__(self) -> None:
        self.attempts = 0
        self.errors: Counter[str] = Counter()

    def add(self, outcome: str) -> None:
        self.attempts += 1
        if outcome != SUCCESS:
            self.errors[outcome] += 1

    def merge(self, other: _Tally) -> None:
        self.attempts += other.attempts
        self.errors.update(other.errors)

    def counts(self, window_s: float | None) -> ErrorCounts:
        return ErrorCounts(window_s, self.attempts, dict(sorted(self.errors.items())))


class _Series:
    def __init__(self) -> None:
        self.total = _Tally()
        self.short = SlidingSlots(SHORT_WINDOW_S, SHORT_SLOT_S, _Tally)
        self.long = SlidingSlots(LONG_WINDOW_S, LONG_SLOT_S, _Tally)

    def add(self, outcome: str, now: float) -> None:
        self.total.add(outcome)
        self.short.current(now).add(outcome)
        self.long.current(now).add(outcome)

    def windows(self, now: float) -> ErrorWindows:
        return ErrorWindows(
            since_start=self.total.counts(None),
            last_1m=_merged(self.short, now).counts(SHORT_WINDOW_S),
            last_15m=_merged(self.long, now).counts(LONG_WINDOW_S),
        )


class ErrorStats:
    """Attempts and errors by class, per key and in total; also a gateway observer.

    `clock` returns seconds on a monotonic clock; tests pass their own. It is safe
    to update from several threads.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._total = _Series()
        self._keys: dict[str, _Series] = {}
        self._lock = threading.Lock()

    def record(self, key_name: str, outcome: str) -> None:
        """Count one attempt on `key_name`; `outcome` is "success" or the error's code."""
        now = self._clock()
        with self._lock:
            series = self._keys.get(key_name)
            if series is None:
                series = self._keys[key_name] = _Series()
            series.add(outcome, now)
            self._total.add(outcome, now)

    def on_call_completed(self, event: CallEvent) -> None:
        self.record(event.key_name, event.outcome)

    def on_call_failed(self, event: CallEvent) -> None:
        self.record(event.key_name, event.outcome)

    def total(self) -> ErrorWindows:
        """Return the attempts and errors of all keys together."""
        now = self._clock()
        with self._lock:
            return self._total.windows(now)

    def for_key(self, key_name: str) -> ErrorWindows:
        """Return the attempts and errors of `key_name`; all zero before its first attempt."""
        now = self._clock()
        with self._lock:
            return (self._keys.get(key_name) or _Series()).windows(now)


def _merged(sliding: SlidingSlots[_Tally], now: float) -> _Tally:
    merged = _Tally()
    for tally in sliding.values(now):
        merged.merge(tally)
    return merged
