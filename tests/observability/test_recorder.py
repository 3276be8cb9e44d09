"""Feeding gateway call events into the performance stats."""

from __future__ import annotations

from datetime import UTC, datetime

from microtopic.gateway import CallContext, CallEvent
from microtopic.observability import CallStatsRecorder, PerformanceStats


def call_event(key_name: str, latency_ms: float, outcome: str = "success") -> CallEvent:
    return CallEvent(
        context=CallContext(request_id="req-1", step="plan"),
        key_name=key_name,
        deployment="gpt-4o-mini",
        attempt=1,
        started_at=datetime.now(UTC),
        latency_ms=latency_ms,
        prompt_tokens=10,
        completion_tokens=20,
        outcome=outcome,
    )


def test_calls_are_recorded_overall_and_per_key() -> None:
    stats = PerformanceStats()
    recorder = CallStatsRecorder(stats)

    recorder.on_call_completed(call_event("east", 100.0))
    recorder.on_call_failed(call_event("west", 300.0, outcome="upstream_server_error"))
    recorder.on_call_completed(call_event("east", 200.0))

    by_name = {item.operation: item for item in stats.snapshot()}
    assert set(by_name) == {"llm_call", "llm_call:east", "llm_call:west"}
    assert by_name["llm_call"].count == 3
    assert by_name["llm_call"].error_count == 1
    assert by_name["llm_call:east"].count == 2
    assert by_name["llm_call:east"].error_count == 0
    assert by_name["llm_call:east"].max_ms == 200.0
    assert by_name["llm_call:west"].error_count == 1
