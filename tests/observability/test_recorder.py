"""Feeding gateway call events into the performance stats."""

from __future__ import annotations

from microtopic.observability import CallStatsRecorder, PerformanceStats
from tests.observability.support import call_event


def test_calls_are_recorded_overall_and_per_key() -> None:
    stats = PerformanceStats()
    recorder = CallStatsRecorder(stats)

    recorder.on_call_completed(call_event("east", latency_ms=100.0))
    recorder.on_call_failed(call_event("west", "upstream_server_error", latency_ms=300.0))
    recorder.on_call_completed(call_event("east", latency_ms=200.0))

    by_name = {item.operation: item for item in stats.snapshot()}
    assert set(by_name) == {"llm_call", "llm_call:east", "llm_call:west"}
    assert by_name["llm_call"].count == 3
    assert by_name["llm_call"].error_count == 1
    assert by_name["llm_call:east"].count == 2
    assert by_name["llm_call:east"].error_count == 0
    assert by_name["llm_call:east"].max_ms == 200.0
    assert by_name["llm_call:west"].error_count == 1
