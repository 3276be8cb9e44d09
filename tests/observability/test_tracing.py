"""Spans of the current trace: nesting, errors, tasks, and nothing without a trace."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from microtopic.errors import NoKeyAvailableError
from microtopic.observability.tracing import (
    SpanKind,
    Trace,
    child_ids,
    current_span_id,
    current_trace,
    error_class,
    record_span,
    span,
)
from microtopic.storage.records import LLM_CALL_SPAN_KIND, STEP_SPAN_KIND, STORAGE_SPAN_KIND


@pytest.fixture
def trace() -> Iterator[Trace]:
    """A trace made current for the test."""
    trace = Trace()
    token = current_trace.set(trace)
    yield trace
    current_trace.reset(token)


def test_span_nests_under_enclosing_span(trace: Trace) -> None:
    with span("plan", SpanKind.STEP) as outer, span("key selection", SpanKind.KEY_SELECTION):
        pass

    inner, recorded_outer = trace.spans
    assert recorded_outer is outer
    assert outer.parent_id is None
    assert inner.parent_id == outer.span_id
    assert inner.span_id != outer.span_id
    assert outer.start <= inner.start <= inner.end <= outer.end
    assert current_span_id.get() is None


def test_span_keeps_attributes(trace: Trace) -> None:
    with span("key selection", SpanKind.KEY_SELECTION, {"attempt": 2}) as selecting:
        selecting.set("key", "east")

    (recorded,) = trace.spans
    assert recorded.attributes == {"attempt": 2, "key": "east"}
    assert recorded.kind is SpanKind.KEY_SELECTION


def test_span_records_error_code(trace: Trace) -> None:
    error = NoKeyAvailableError("No key.", key_count=3, inactive_count=3)

    with pytest.raises(NoKeyAvailableError), span("key selection", SpanKind.KEY_SELECTION):
        raise error

    (recorded,) = trace.spans
    assert recorded.attributes["error"] == "no_key_available"
    assert recorded.end >= recorded.start


def test_error_class_names_cancellation_and_other_errors() -> None:
    assert error_class(asyncio.CancelledError()) == "cancelled"
    assert error_class(ValueError("bad")) == "ValueError"


def test_nothing_is_recorded_without_trace() -> None:
    with span("plan", SpanKind.STEP) as outside:
        outside.set("key", "east")
        ids = child_ids()
    record_span("queue wait", SpanKind.QUEUE, 1.0, 2.0)

    assert outside.span_id == 0
    assert outside.attributes == {}
    assert ids == (None, None)
    assert current_span_id.get() is None


def test_record_span_adds_known_times(trace: Trace) -> None:
    record_span("queue wait", SpanKind.QUEUE, 10.0, 10.5, parent_id=7, attributes={"n": 1})

    (recorded,) = trace.spans
    assert recorded.duration_ms == 500.0
    assert recorded.parent_id == 7
    assert recorded.attributes == {"n": 1}


def test_child_ids_take_current_parent(trace: Trace) -> None:
    with span("write:1", SpanKind.STEP) as step:
        span_id, parent_id = child_ids()

    assert parent_id == step.span_id
    assert span_id is not None
    assert span_id != step.span_id
    assert trace.spans == [step]


async def test_parallel_tasks_keep_their_own_parents(trace: Trace) -> None:
    async def write(index: int) -> None:
        with span(f"write:{index}", SpanKind.STEP):
            await asyncio.sleep(0.01)
            with span("validate reply", SpanKind.VALIDATION):
                await asyncio.sleep(0)

    async with asyncio.TaskGroup() as group:
        for index in (1, 2):
            group.create_task(write(index))

    by_name = {(s.name, s.parent_id): s for s in trace.spans}
    steps = {s.name: s for s in trace.spans if s.kind is SpanKind.STEP}
    assert set(steps) == {"write:1", "write:2"}
    for step in steps.values():
        assert step.parent_id is None
        assert ("validate reply", step.span_id) in by_name


def test_wall_time_follows_monotonic_clock(trace: Trace) -> None:
    later = trace.started + 1.5

    assert (trace.wall_time(later) - trace.started_at).total_seconds() == pytest.approx(1.5)


def test_storage_kinds_match_span_kinds() -> None:
    assert SpanKind.STEP.value == STEP_SPAN_KIND
    assert SpanKind.LLM_CALL.value == LLM_CALL_SPAN_KIND
    assert SpanKind.STORAGE.value == STORAGE_SPAN_KIND
