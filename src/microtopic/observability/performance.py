"""Per-operation timing stats kept in bounded memory.

Each operation keeps exact totals (count, errors, min, max, mean) and its last
`window` durations, from which the percentiles are computed, so p50 and p95
describe recent behaviour and memory stays fixed however long the service runs.
"""

from __future__ import annotations

import math
import threading
from collections import deque
from dataclasses import dataclass

RECENT_SHOWN = 20


@dataclass(frozen=True)
class OperationStats:
    """A snapshot of one operation's timings, in milliseconds."""

    operation: str
    count: int
    error_count: int
    mean_ms: float
    min_ms: float
    max_ms: float
    p50_ms: float
    p95_ms: float
    recent_ms: list[float]


class _Series:
    def __init__(self, window: int) -> None:
        self.count = 0
        self.error_count = 0
        self.total_ms = 0.0
        self.min_ms = math.inf
        self.max_ms = 0.0
        self.recent: deque[float] = deque(maxlen=window)

    def add(self, duration_ms: float, *, ok: bool) -> None:
        self.count += 1
        self.error_count += 0 if ok else 1
        self.total_ms += duration_ms
        self.min_ms = min(self.min_ms, duration_ms)
        self.max_ms = max(self.max_ms, duration_ms)
        self.recent.append(duration_ms)


class PerformanceStats:
    """Timings per operation name, safe to update from several threads."""

    def __init__(self, window: int = 1000) -> None:
        if window < 1:
            raise ValueError("window must be at least 1")
        self._window = window
        self._series: dict[str, _Series] = {}
        self._lock = threading.Lock()

    def record(self, operation: str, duration_ms: float, *, ok: bool = True) -> None:
        """Add one duration of `operation`."""
        with self._lock:
            series = self._series.get(operation)
            if series is None:
                series = self._series[operation] = _Series(self._window)
            series.add(duration_ms, ok=ok)

    def snapshot(self) -> list[OperationStats]:
        """Return every operation's stats, sorted by name."""
        with self._lock:
            return [_summarise(name, self._series[name]) for name in sorted(self._series)]


def _summarise(name: str, series: _Series) -> OperationStats:
    ordered = sorted(series.recent)
    return OperationStats(
        operation=name,
        count=series.count,
        error_count=series.error_count,
        mean_ms=series.total_ms / series.count,
        min_ms=series.min_ms,
        max_ms=series.max_ms,
        p50_ms=percentile(ordered, 50),
        p95_ms=percentile(ordered, 95),
        recent_ms=list(series.recent)[-RECENT_SHOWN:],
    )


def percentile(ordered: list[float], rank: float) -> float:
    """Return the `rank` percentile of sorted values by the nearest-rank method."""
    if not ordered:
        return 0.0
    index = max(0, math.ceil(rank / 100 * len(ordered)) - 1)
    return ordered[index]
