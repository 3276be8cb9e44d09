"""Per-operation timings since start and over the last minute and the last 15 minutes.

Each operation keeps one histogram since start, one per 5-second time slot for the
last minute, and one per minute for the last 15 minutes (`slots.SlidingSlots`). A
window's figures merge the slots it covers: the current, partly filled slot and the
full ones before it. So "the last minute" spans between 55 and 60 seconds and "the
last 15 minutes" between 14 and 15 minutes. Count, errors, mean, minimum and maximum
are exact; p50, p95 and p99 are within about 2% (see `histogram`).

Why histograms per time slot rather than the last N durations or a sample per slot?
A histogram has at most `histogram.BIN_COUNT` bins whatever the traffic. Memory is
thus bounded by the number of operations times 28 histograms (12 + 15 + 1), while
the count, mean and maximum stay exact and old slots drop out whole. Recording costs
one logarithm and a few counter increments. A bounded sample per slot would be exact at
low traffic but would make p99 a guess at high traffic, exactly when it matters, and
the last N durations cover a time span that shrinks as traffic grows. The long
window has coarser slots than the short one so that reading it merges 15 histograms,
not 180.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from microtopic.observability.histogram import Histogram
from microtopic.observability.slots import SlidingSlots

SHORT_WINDOW_S = 60.0
SHORT_SLOT_S = 5.0
LONG_WINDOW_S = 900.0
LONG_SLOT_S = 60.0
RECENT_SHOWN = 20

# The windows a timeline covers: the last minute in 5-second slots, or the last 15
# minutes in 1-minute slots.
Window = Literal["1m", "15m"]


@dataclass(frozen=True)
class WindowStats:
    """One operation's timings over a sliding window, in milliseconds; zeros when empty."""

    window_s: float
    count: int
    error_count: int
    mean_ms: float
    min_ms: float
    max_ms: float
    p50_ms: float
    p95_ms: float
    p99_ms: float


@dataclass(frozen=True)
class OperationStats:
    """A snapshot of one operation's timings, in milliseconds.

    The top-level figures count every duration since start; `recent_ms` lists the
    last `RECENT_SHOWN` durations, oldest first.
    """

    operation: str
    count: int
    error_count: int
    mean_ms: float
    min_ms: float
    max_ms: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    recent_ms: list[float]
    last_1m: WindowStats
    last_15m: WindowStats


@dataclass(frozen=True)
class SlotStats:
    """One time slot of an operation's timeline, in milliseconds; zeros when it had none.

    `start_s` is when the slot began, on the stats' monotonic clock.
    """

    start_s: float
    count: int
    error_count: int
    mean_ms: float
    p50_ms: float
    p95_ms: float


@dataclass(frozen=True)
class Timeline:
    """An operation's slots over a window, oldest first, the current partial slot last.

    `now_s` is when it was read, on the same clock as the slots' `start_s`.
    """

    operation: str
    window_s: float
    slot_s: float
    now_s: float
    slots: list[SlotStats]


class _Series:
    def __init__(self) -> None:
        self.total = Histogram()
        self.recent: deque[float] = deque(maxlen=RECENT_SHOWN)
        self.short = SlidingSlots(SHORT_WINDOW_S, SHORT_SLOT_S, Histogram)
        self.long = SlidingSlots(LONG_WINDOW_S, LONG_SLOT_S, Histogram)

    def add(self, duration_ms: float, ok: bool, now: float) -> None:
        self.total.add(duration_ms, ok=ok)
        self.recent.append(duration_ms)
        self.short.current(now).add(duration_ms, ok=ok)
        self.long.current(now).add(duration_ms, ok=ok)


class PerformanceStats:
    """Timings per operation name, safe to update from several threads.

    `clock` returns seconds on a monotonic clock; tests pass their own.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._series: dict[str, _Series] = {}
        self._lock = threading.Lock()

    def record(self, operation: str, duration_ms: float, *, ok: bool = True) -> None:
        """Add one duration of `operation`."""
        now = self._clock()
        with self._lock:
            series = self._series.get(operation)
            if series is None:
                series = self._series[operation] = _Series()
            series.add(duration_ms, ok, now)

    def timeline(self, operation: str, window: Window) -> Timeline:
        """Return `operation`'s slots over `window`; all empty for an unknown operation."""
        now = self._clock()
        with self._lock:
            series = self._series.get(operation) or _Series()
            sliding = series.short if window == "1m" else series.long
            slots = [_slot(start_s, histogram) for start_s, histogram in sliding.by_start(now)]
        return Timeline(operation, sliding.window_s, sliding.slot_s, now, slots)

    def snapshot(self) -> list[OperationStats]:
        """Return every operation's stats, sorted by name."""
        now = self._clock()
        with self._lock:
            return [_summarise(name, self._series[name], now) for name in sorted(self._series)]


def _summarise(name: str, series: _Series, now: float) -> OperationStats:
    total = series.total
    return OperationStats(
        operation=name,
        count=total.count,
        error_count=total.error_count,
        mean_ms=total.mean_ms,
        min_ms=total.min_ms,
        max_ms=total.max_ms,
        p50_ms=total.percentile(50),
        p95_ms=total.percentile(95),
        p99_ms=total.percentile(99),
        recent_ms=list(series.recent),
        last_1m=_window(_merged(series.short, now), SHORT_WINDOW_S),
        last_15m=_window(_merged(series.long, now), LONG_WINDOW_S),
    )


def _merged(sliding: SlidingSlots[Histogram], now: float) -> Histogram:
    merged = Histogram()
    for histogram in sliding.values(now):
        merged.merge(histogram)
    return merged


def _window(histogram: Histogram, window_s: float) -> WindowStats:
    return WindowStats(
        window_s=window_s,
        count=histogram.count,
        error_count=histogram.error_count,
        mean_ms=histogram.mean_ms,
        min_ms=histogram.min_ms if histogram.count else 0.0,
        max_ms=histogram.max_ms,
        p50_ms=histogram.percentile(50),
        p95_ms=histogram.percentile(95),
        p99_ms=histogram.percentile(99),
    )


def _slot(start_s: float, histogram: Histogram | None) -> SlotStats:
    if histogram is None:
        return SlotStats(start_s, 0, 0, 0.0, 0.0, 0.0)
    return SlotStats(
        start_s=start_s,
        count=histogram.count,
        error_count=histogram.error_count,
        mean_ms=histogram.mean_ms,
        p50_ms=histogram.percentile(50),
        p95_ms=histogram.percentile(95),
    )
