"""A histogram of durations in log-spaced bins: fixed memory, about 2% relative error.

Bin `i` contains durations from `MIN_MS * GROWTH**i` up to the next bin's start, so each
bin is 4% wide and its geometric middle is within 2% of every duration in it. A
percentile is read as the middle of the bin that contains it, clamped to the exact
minimum and maximum, so p50 of a single duration is that duration. Durations under
`MIN_MS` share the first bin and those over `MAX_MS` the last, which bounds a
histogram to `BIN_COUNT` bins whatever it is fed.
"""

from __future__ import annotations

import math
from collections import Counter

GROWTH = 1.04
MIN_MS = 0.001
MAX_MS = 1e8  # about 28 hours
_SCALE = 1 / math.log(GROWTH)
_OFFSET = -math.log(MIN_MS) * _SCALE
BIN_COUNT = int(math.log(MAX_MS / MIN_MS) * _SCALE) + 1


def bin_of(duration_ms: float) -> int:
    """Return the bin that contains `duration_ms`."""
    if duration_ms <= MIN_MS:
        return 0
    if not duration_ms < MAX_MS:  # also infinity and NaN
        return BIN_COUNT - 1
    return min(BIN_COUNT - 1, int(math.log(duration_ms) * _SCALE + _OFFSET))


def bin_middle_ms(index: int) -> float:
    """Return the geometric middle of bin `index`, in milliseconds."""
    return float(MIN_MS * GROWTH ** (index + 0.5))


class Histogram:
    """Counts of durations by bin, with their exact count, sum, minimum and maximum."""

    __slots__ = ("bins", "count", "error_count", "max_ms", "min_ms", "total_ms")

    def __init__(self) -> None:
        self.bins: Counter[int] = Counter()
        self.count = 0
        self.error_count = 0
        self.total_ms = 0.0
        self.min_ms = math.inf
        self.max_ms = 0.0

    def add(self, duration_ms: float, *, ok: bool) -> None:
        self.bins[bin_of(duration_ms)] += 1
        self.count += 1
        if not ok:
            self.error_count += 1
        self.total_ms += duration_ms
        if duration_ms < self.min_ms:
            self.min_ms = duration_ms
        if duration_ms > self.max_ms:
            self.max_ms = duration_ms

    def merge(self, other: Histogram) -> None:
        """Add every duration of `other` to this histogram."""
        self.bins.update(other.bins)
        self.count += other.count
        self.error_count += other.error_count
        self.total_ms += other.total_ms
        self.min_ms = min(self.min_ms, other.min_ms)
        self.max_ms = max(self.max_ms, other.max_ms)

    def percentile(self, rank: float) -> float:
        """Return the `rank` percentile by the nearest-rank method, or 0.0 when empty."""
        if self.count == 0:
            return 0.0
        target = max(1, math.ceil(rank / 100 * self.count))
        if target >= self.count:
            return self.max_ms
        seen = 0
        for index in sorted(self.bins):
            seen += self.bins[index]
            if seen >= target:
                return min(self.max_ms, max(self.min_ms, bin_middle_ms(index)))
        return self.max_ms  # unreachable: the bins add up to `count`

    @property
    def mean_ms(self) -> float:
        return self.total_ms / self.count if self.count else 0.0
