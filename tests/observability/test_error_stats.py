"""LLM call attempts and errors by class: per key and in total, since start and in windows."""

from __future__ import annotations

from microtopic.observability import ErrorCounts, ErrorStats
from microtopic.observability.performance import LONG_SLOT_S, SHORT_SLOT_S
from tests.observability.support import FakeClock, call_event

RATE_LIMITED = "upstream_rate_limited"
SERVER_ERROR = "upstream_server_error"


def test_attempts_counted_per_key_and_in_total() -> None:
    stats = ErrorStats(FakeClock())
    for key_name, outcome in [
        ("east", "success"),
        ("east", SERVER_ERROR),
        ("west", RATE_LIMITED),
        ("west", RATE_LIMITED),
        ("west", "success"),
    ]:
        stats.record(key_name, outcome)

    total, east, west = stats.total(), stats.for_key("east"), stats.for_key("west")

    for counts in (total.since_start, total.last_1m, total.last_15m):
        assert counts.attempts == 5
        assert counts.errors == {RATE_LIMITED: 2, SERVER_ERROR: 1}
        assert counts.failed == 3
    assert east.last_1m.attempts == 2
    assert east.last_1m.errors == {SERVER_ERROR: 1}
    assert west.last_15m.attempts == 3
    assert west.last_15m.errors == {RATE_LIMITED: 2}
    assert west.since_start.errors == {RATE_LIMITED: 2}


def test_successes_are_not_errors() -> None:
    stats = ErrorStats(FakeClock())
    stats.record("east", "success")
    stats.record("east", "success")

    counts = stats.total().last_1m

    assert counts.attempts == 2
    assert counts.errors == {}
    assert counts.failed == 0


def test_errors_are_sorted_by_code() -> None:
    stats = ErrorStats(FakeClock())
    for outcome in ["upstream_timeout", "content_filtered", SERVER_ERROR, "content_filtered"]:
        stats.record("east", outcome)

    counts = stats.total().last_15m

    assert list(counts.errors) == ["content_filtered", SERVER_ERROR, "upstream_timeout"]
    assert counts.errors["content_filtered"] == 2


def test_old_errors_leave_short_window_first() -> None:
    clock = FakeClock()
    stats = ErrorStats(clock)
    stats.record("east", SERVER_ERROR)
    clock.advance(120.0)
    stats.record("east", "success")
    stats.record("west", RATE_LIMITED)

    total, east = stats.total(), stats.for_key("east")

    assert total.last_1m.attempts == 2
    assert total.last_1m.errors == {RATE_LIMITED: 1}
    assert total.last_15m.attempts == 3
    assert total.last_15m.errors == {RATE_LIMITED: 1, SERVER_ERROR: 1}
    assert east.last_1m.errors == {}
    assert east.last_15m.errors == {SERVER_ERROR: 1}


def test_windows_empty_after_fifteen_minutes() -> None:
    clock = FakeClock()
    stats = ErrorStats(clock)
    stats.record("east", SERVER_ERROR)
    clock.advance(900.0 + LONG_SLOT_S)

    total = stats.total()

    assert total.last_15m.attempts == 0
    assert total.last_15m.errors == {}
    assert total.last_1m.attempts == 0
    assert total.since_start.attempts == 1
    assert total.since_start.errors == {SERVER_ERROR: 1}


def test_short_window_spans_55_to_60_seconds() -> None:
    clock = FakeClock()
    stats = ErrorStats(clock)
    stats.record("east", SERVER_ERROR)
    clock.advance(55.0)
    inside = stats.total().last_1m.errors
    clock.advance(SHORT_SLOT_S)

    outside = stats.total().last_1m.errors

    assert inside == {SERVER_ERROR: 1}
    assert outside == {}


def test_long_window_spans_14_to_15_minutes() -> None:
    clock = FakeClock()
    stats = ErrorStats(clock)
    stats.record("east", SERVER_ERROR)
    clock.advance(14 * 60.0)
    inside = stats.total().last_15m.errors
    clock.advance(LONG_SLOT_S)

    outside = stats.total().last_15m.errors

    assert inside == {SERVER_ERROR: 1}
    assert outside == {}


def test_windows_report_their_length() -> None:
    stats = ErrorStats(FakeClock())

    total = stats.total()

    assert total.last_1m.window_s == 60.0
    assert total.last_15m.window_s == 900.0
    assert total.since_start.window_s is None


def test_unknown_key_has_zero_counts() -> None:
    stats = ErrorStats(FakeClock())
    stats.record("east", SERVER_ERROR)

    south = stats.for_key("south")

    for counts in (south.since_start, south.last_1m, south.last_15m):
        assert counts.attempts == 0
        assert counts.errors == {}


def test_rate_is_share_of_attempts() -> None:
    counts = ErrorCounts(window_s=60.0, attempts=8, errors={SERVER_ERROR: 2})
    empty = ErrorCounts(window_s=60.0, attempts=0, errors={})

    assert counts.rate(counts.errors[SERVER_ERROR]) == 0.25
    assert counts.rate(counts.failed) == 0.25
    assert empty.rate(empty.failed) == 0.0


def test_gateway_events_are_recorded() -> None:
    stats = ErrorStats(FakeClock())

    stats.on_call_completed(call_event("east", "success"))
    stats.on_call_failed(call_event("west", RATE_LIMITED))

    assert stats.total().last_1m.attempts == 2
    assert stats.for_key("west").last_1m.errors == {RATE_LIMITED: 1}
    assert stats.for_key("east").last_1m.errors == {}


def test_memory_stays_bounded_over_hours() -> None:
    clock = FakeClock()
    stats = ErrorStats(clock)
    outcomes = ["success", RATE_LIMITED, SERVER_ERROR, "upstream_timeout"]
    for second in range(4 * 3600):
        clock.now_s = 1000.0 + second
        stats.record(f"key-{second % 3}", outcomes[second % len(outcomes)])

    total = stats.total()

    assert len(stats._keys) == 3
    for series in [stats._total, *stats._keys.values()]:
        assert len(series.short.slots) <= 60 / SHORT_SLOT_S
        assert len(series.long.slots) <= 900 / LONG_SLOT_S
        assert all(len(tally.errors) <= 3 for tally in series.long.slots.values())
    assert total.since_start.attempts == 4 * 3600
    assert 14 * 60 <= total.last_15m.attempts <= 15 * 60
    assert 55 <= total.last_1m.attempts <= 60
