"""Response bodies of the trace routes: recent requests and one request's trace."""

from __future__ import annotations

from datetime import datetime, timedelta

from pydantic import BaseModel

from microtopic.storage import RequestSummary, SpanRecord, StoredTrace

AttributeValue = str | int | float | bool | None


class RequestSummaryOut(BaseModel):
    """A request without its topic: what it asked, how it ended, where it went.

    `kind` is `generation`, with the course, subject and topic, or `passthrough`
    for a call forwarded through the OpenAI-compatible endpoints, with the
    `requested_model` the client named, its `max_tokens` if set and its
    `message_count`. The other kind's fields are null. `keys` are the keys its
    LLM calls went to; `llm_calls` counts every attempt, and `failed_calls` those
    that returned no completion. A cancelled request has the status `failed` and
    the error code `cancelled`.
    """

    id: str
    kind: str
    course_id: str | None
    subject_name: str | None
    topic_name: str | None
    requested_model: str | None
    max_tokens: int | None
    message_count: int | None
    status: str
    error_code: str | None
    error_message: str | None
    created_at: datetime
    finished_at: datetime | None
    duration_ms: int | None
    keys: list[str]
    llm_calls: int
    failed_calls: int

    @classmethod
    def from_summary(cls, summary: RequestSummary) -> RequestSummaryOut:
        return cls(
            id=summary.id,
            kind=summary.kind.value,
            requested_model=summary.requested_model,
            max_tokens=summary.max_tokens,
            message_count=summary.message_count,
            course_id=summary.course_id,
            subject_name=summary.subject_name,
            topic_name=summary.topic_name,
            status=summary.status.value,
            error_code=summary.error_code,
            error_message=summary.error_message,
            created_at=summary.created_at,
            finished_at=summary.finished_at,
            duration_ms=summary.duration_ms,
            keys=summary.keys,
            llm_calls=summary.llm_calls,
            failed_calls=summary.failed_calls,
        )


class RequestListResponse(BaseModel):
    """The newest requests that match the filters, newest first."""

    success: bool = True
    requests: list[RequestSummaryOut]


class SpanOut(BaseModel):
    """One span of a trace. `offset_ms` is its start after the trace's `started_at`.

    `parent_id` is the span that contains it, or None at the top. `kind` is one of
    validation, storage, cache, step, repair, key_selection, queue and llm_call.
    An `llm_call` span's attributes are `step`, `key`, `deployment`, `attempt`,
    `latency_ms`, `prompt_tokens`, `completion_tokens`, `outcome` and `error` (the
    error code, or None when it succeeded). Any span that failed has `error`.
    """

    span_id: int
    parent_id: int | None
    name: str
    kind: str
    started_at: datetime
    finished_at: datetime
    offset_ms: float
    duration_ms: float
    attributes: dict[str, AttributeValue]

    @classmethod
    def from_record(cls, span: SpanRecord, trace_start: datetime) -> SpanOut:
        return cls(
            span_id=span.span_id,
            parent_id=span.parent_id,
            name=span.name,
            kind=span.kind,
            started_at=span.started_at,
            finished_at=span.finished_at,
            offset_ms=round(_ms(span.started_at - trace_start), 3),
            duration_ms=round(span.duration_ms, 3),
            attributes=dict(span.attributes),
        )


class TraceResponse(BaseModel):
    """A request and its trace: every span from `started_at`, ordered by start.

    The trace starts when the request arrived, which may be before the request's
    `created_at`, and lasts `duration_ms`, to the end of its last span.
    """

    success: bool = True
    request: RequestSummaryOut
    started_at: datetime
    duration_ms: float
    spans: list[SpanOut]

    @classmethod
    def from_trace(cls, trace: StoredTrace) -> TraceResponse:
        request = trace.request
        started_at = min([request.created_at, *(span.started_at for span in trace.spans)])
        ends = [span.finished_at for span in trace.spans]
        if request.finished_at is not None:
            ends.append(request.finished_at)
        finished_at = max(ends, default=started_at)
        return cls(
            request=RequestSummaryOut.from_summary(request),
            started_at=started_at,
            duration_ms=round(_ms(finished_at - started_at), 3),
            spans=[SpanOut.from_record(span, started_at) for span in trace.spans],
        )


def _ms(delta: timedelta) -> float:
    return delta / timedelta(milliseconds=1)
