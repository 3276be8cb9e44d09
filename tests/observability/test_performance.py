"""Per-operation timings: exact totals since start, and 1-minute and 15-minute windows."""

from __future__ import annotations

import pytest

from microtopic.observability import PerformanceStats
from microtopic.observability.performance import LONG_SLOT_S, RECENT_SHOWN, SHORT_SLOT_S
from tests.observability.support import FakeClock


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
    assert snapshot.p50_ms == pytest.approx(20.0, rel=0.021)
    assert snapshot.p95_ms == 40.0
    assert snapshot.p99_ms == 40.0
    assert snapshot.recent_ms == [40.0, 10.0, 30.0, 20.0]


def test_windows_hold_recent_durations() -> None:
    stats = PerformanceStats()
    for duration_ms in [40.0, 10.0, 30.0, 20.0]:
        stats.record("generate", duration_ms, ok=duration_ms != 30.0)

    (snapshot,) = stats.snapshot()

    for window in (snapshot.last_1m, snapshot.last_15m):
        assert window.count == 4
        assert window.error_count == 1
        assert window.mean_ms == 25.0
        assert window.min_ms == 10.0
        assert window.max_ms == 40.0
        assert window.p50_ms == pytest.approx(20.0, rel=0.021)
        assert window.p99_ms == 40.0
    assert snapshot.last_1m.window_s == 60.0
    assert snapshot.last_15m.window_s == 900.0


def test_old_durations_leave_short_window_first() -> None:
    clock = FakeClock()
    stats = PerformanceStats(clock=clock)
    stats.record("llm_call", 1000.0, ok=False)
    clock.advance(120.0)
    stats.record("llm_call", 10.0)

    (snapshot,) = stats.snapshot()

    assert snapshot.last_1m.count == 1
    assert snapshot.last_1m.error_count == 0
    assert snapshot.last_1m.max_ms == 10.0
    assert snapshot.last_15m.count == 2
    assert snapshot.last_15m.error_count == 1
    assert snapshot.last_15m.max_ms == 1000.0
    assert snapshot.count == 2


def test_windows_empty_after_fifteen_minutes() -> None:
    clock = FakeClock()
    stats = PerformanceStats(clock=clock)
    stats.record("generation", 500.0)
    clock.advance(900.0 + LONG_SLOT_S)

    (snapshot,) = stats.snapshot()

    assert snapshot.last_15m.count == 0
    assert snapshot.last_15m.p95_ms == 0.0
    assert snapshot.last_15m.min_ms == 0.0
    assert snapshot.last_1m.count == 0
    assert snapshot.count == 1
    assert snapshot.max_ms == 500.0


def test_short_window_spans_55_to_60_seconds() -> None:
    clock = FakeClock()
    stats = PerformanceStats(clock=clock)
    stats.record("generation", 1.0)
    clock.advance(55.0)
    inside = stats.snapshot()[0].last_1m.count
    clock.advance(SHORT_SLOT_S)

    outside = stats.snapshot()[0].last_1m.count

    assert inside == 1
    assert outside == 0


def test_memory_stays_bounded_over_hours() -> None:
    clock = FakeClock()
    stats = PerformanceStats(clock=clock)
    for second in range(4 * 3600):
        clock.now_s = 1000.0 + second
        stats.record("llm_call", 1.0 + second % 977)

    series = stats._series["llm_call"]

    assert len(series.short.slots) <= 60 / SHORT_SLOT_S
    assert len(series.long.slots) <= 900 / LONG_SLOT_S
    assert all(len(slot.bins) <= int(LONG_SLOT_S) for slot in series.long.slots.values())
    assert len(series.recent) == RECENT_SHOWN
    (snapshot,) = stats.snapshot()
    assert snapshot.count == 4 * 3600
    assert 14 * 60 <= snapshot.last_15m.count <= 15 * 60
    assert 55 <= snapshot.last_1m.count <= 60


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


def test_timeline_has_every_slot_of_window() -> None:
    clock = FakeClock()
    stats = PerformanceStats(clock)
    stats.record("llm_call", 10.0)
    clock.advance(LONG_SLOT_S)
    stats.record("llm_call", 30.0, ok=False)
    stats.record("llm_call", 50.0)

    timeline = stats.timeline("llm_call", "15m")

    assert timeline.slot_s == LONG_SLOT_S
    assert timeline.window_s == 900.0
    assert timeline.now_s == clock.now_s
    assert len(timeline.slots) == 15
    *empty, previous, current = timeline.slots
    assert all(slot.count == 0 for slot in empty)
    assert previous.count == 1
    assert current.count == 2
    assert current.error_count == 1
    assert current.mean_ms == 40.0
    assert current.p95_ms == 50.0
    assert current.start_s <= clock.now_s < current.start_s + LONG_SLOT_S
    starts = [slot.start_s for slot in timeline.slots]
    assert starts == [starts[0] + index * LONG_SLOT_S for index in range(15)]


def test_short_timeline_drops_old_slots() -> None:
    clock = FakeClock()
    stats = PerformanceStats(clock)
    stats.record("generation", 10.0)
    clock.advance(60.0)

    timeline = stats.timeline("generation", "1m")

    assert timeline.slot_s == SHORT_SLOT_S
    assert len(timeline.slots) == 12
    assert sum(slot.count for slot in timeline.slots) == 0


def test_timeline_of_unknown_operation_is_empty() -> None:
    stats = PerformanceStats()

    timeline = stats.timeline("passthrough", "1m")

    assert len(timeline.slots) == 12
    assert all(slot.count == 0 for slot in timeline.slots)
    assert stats.snapshot() == []
