"""Keeping each running request's call events until the request ends."""

from __future__ import annotations

from datetime import UTC, datetime

from microtopic.gateway import CallContext, CallEvent
from microtopic.observability import RequestCallLog


def call_event(request_id: str | None, attempt: int) -> CallEvent:
    return CallEvent(
        context=CallContext(request_id=request_id, step="plan"),
        key_name="east",
        deployment="gpt-4o-mini",
        attempt=attempt,
        started_at=datetime.now(UTC),
        latency_ms=12.5,
        prompt_tokens=10,
        completion_tokens=20,
        outcome="success",
    )


def test_pop_returns_request_events_in_order() -> None:
    log = RequestCallLog()
    log.on_call_failed(call_event("req-1", 1))
    log.on_call_completed(call_event("req-2", 1))
    log.on_call_completed(call_event("req-1", 2))

    events = log.pop("req-1")

    assert [event.attempt for event in events] == [1, 2]
    assert all(event.context.request_id == "req-1" for event in events)


def test_pop_forgets_the_request() -> None:
    log = RequestCallLog()
    log.on_call_completed(call_event("req-1", 1))

    log.pop("req-1")

    assert log.pop("req-1") == []


def test_calls_without_request_are_dropped() -> None:
    log = RequestCallLog()

    log.on_call_completed(call_event(None, 1))

    assert log._events == {}
