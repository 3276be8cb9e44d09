"""The current trace as the records the stores write: LLM calls, steps and other spans.

A request's trace is stored in three parts (`microtopic.storage.traces`): its steps,
its LLM attempts, which come from the gateway's call events, and every other span.
"""

from __future__ import annotations

from microtopic.gateway.events import CallEvent
from microtopic.observability.tracing import Span, SpanKind, Trace, current_trace
from microtopic.storage.records import LlmCallRecord, SpanRecord, StepRecord


def call_records(events: list[CallEvent]) -> list[LlmCallRecord]:
    """Return the gateway's call events as the records of their `llm_calls` rows."""
    return [
        LlmCallRecord(
            step=event.context.step,
            key_name=event.key_name,
            deployment=event.deployment,
            attempt=event.attempt,
            latency_ms=event.latency_ms,
            prompt_tokens=event.prompt_tokens,
            completion_tokens=event.completion_tokens,
            outcome=event.outcome,
            started_at=event.started_at,
            span_id=event.span_id,
            parent_id=event.parent_id,
        )
        for event in events
    ]


def trace_spans() -> list[SpanRecord]:
    """Return the current trace's spans except its steps, which are stored as steps."""
    trace = current_trace.get()
    if trace is None:
        return []
    return [
        _span_record(trace, traced) for traced in trace.spans if traced.kind is not SpanKind.STEP
    ]


def trace_steps() -> list[StepRecord]:
    """Return the current trace's steps, for a request that failed before its pipeline ended."""
    trace = current_trace.get()
    if trace is None:
        return []
    return [
        StepRecord(
            traced.name,
            trace.wall_time(traced.start),
            trace.wall_time(traced.end),
            traced.span_id,
            traced.parent_id,
            _error_attribute(traced),
        )
        for traced in trace.spans
        if traced.kind is SpanKind.STEP
    ]


def _error_attribute(traced: Span) -> str | None:
    error = traced.attributes.get("error")
    return None if error is None else str(error)


def _span_record(trace: Trace, traced: Span) -> SpanRecord:
    return SpanRecord(
        span_id=traced.span_id,
        parent_id=traced.parent_id,
        name=traced.name,
        kind=traced.kind.value,
        started_at=trace.wall_time(traced.start),
        finished_at=trace.wall_time(traced.end),
        attributes=traced.attributes,
    )
