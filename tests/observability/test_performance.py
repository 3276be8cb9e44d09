"""Per-operation timings: nearest-rank percentiles over a bounded window."""

from __future__ import annotations

import pytest

from microtopic.observability import PerformanceStats
from microtopic.observability.performance import RECENT_SHOWN, percentile


@pytest.mark.parametrize(
    ("values", "rank", "expected"),
    [
        ([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0], 50, 5.0),
        ([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0], 95, 10.0),
        ([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0], 90, 9.0),
        ([15.0, 20.0, 35.0, 40.0, 50.0], 30, 20.0),
        ([15.0, 20.0, 35.0, 40.0, 50.0], 40, 20.0),
        ([15.0, 20.0, 35.0, 40.0, 50.0], 100, 50.0),
        ([15.0, 20.0, 35.0, 40.0, 50.0], 0, 15.0),
        ([7.0], 95, 7.0),
        ([], 50, 0.0),
    ],
)
def test_percentile_uses_nearest_rank(values: list[float], rank: float, expected: float) -> None:
    result = percentile(values, rank)

    assert result == expected


def test_snapshot_summarises_operation() -> None:
    stats = PerformanceStats()
    for duration_ms in [40.0, 10.0, 30.0, 20.0]:
        stats.record("generate", duration_ms)

    (snapshot,) = stats.snapshot()

    assert snapshot.operation == "generate"
    assert snapshot.count == 4
    assert snapshot.error_count == 0
    assert snapshot.mean_ms == 25.0
    assert snapshot.min_ms == 10.0
    assert snapshot.max_ms == 40.0
    assert snapshot.p50_ms == 20.0
    assert snapshot.p95_ms == 40.0
    assert snapshot.recent_ms == [40.0, 10.0, 30.0, 20.0]


def test_window_bounds_percentiles_not_totals() -> None:
    stats = PerformanceStats(window=3)
    for duration_ms in [1000.0, 900.0, 1.0, 2.0, 3.0]:
        stats.record("generate", duration_ms)

    (snapshot,) = stats.snapshot()

    assert snapshot.count == 5
    assert snapshot.max_ms == 1000.0
    assert snapshot.min_ms == 1.0
    assert snapshot.mean_ms == pytest.approx(1906.0 / 5)
    assert snapshot.p95_ms == 3.0
    assert snapshot.p50_ms == 2.0
    assert snapshot.recent_ms == [1.0, 2.0, 3.0]


def test_recent_list_is_capped() -> None:
    stats = PerformanceStats()
    for duration_ms in range(RECENT_SHOWN + 5):
        stats.record("generate", float(duration_ms))

    (snapshot,) = stats.snapshot()

    assert len(snapshot.recent_ms) == RECENT_SHOWN
    assert snapshot.recent_ms[-1] == float(RECENT_SHOWN + 4)


def test_errors_are_counted() -> None:
    stats = PerformanceStats()
    stats.record("llm_call", 12.0, ok=False)
    stats.record("llm_call", 8.0)
    stats.record("llm_call", 30.0, ok=False)

    (snapshot,) = stats.snapshot()

    assert snapshot.count == 3
    assert snapshot.error_count == 2


def test_snapshot_is_sorted_by_name() -> None:
    stats = PerformanceStats()
    for operation in ["store", "generate", "llm_call"]:
        stats.record(operation, 1.0)

    snapshot = stats.snapshot()

    assert [item.operation for item in snapshot] == ["generate", "llm_call", "store"]


def test_empty_stats_have_no_operations() -> None:
    stats = PerformanceStats()

    snapshot = stats.snapshot()

    assert snapshot == []


def test_window_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        PerformanceStats(window=0)
