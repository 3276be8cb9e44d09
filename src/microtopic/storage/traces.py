"""Request traces as stored: read one, list recent requests, prune old spans.

A request is a generation or a call forwarded through the passthrough; both are
stored the same way. A trace is not one table. The store writes a request's steps into
`generation_requests.steps`, its LLM attempts into `llm_calls` and every other span
into `trace_spans`, all with span ids of one sequence, in the transaction that
finishes the request. This module joins them back into one list of spans.

Pruning deletes the `trace_spans` rows of old requests. The request, its topic, its
steps and its LLM calls stay, because they are the record of what was generated
and `microtopic keys` counts key usage from them. A request older than the
retention has no trace to read, even before the next prune removes its spans.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, delete, exists, select
from sqlalchemy.ext.asyncio import AsyncSession

from microtopic.errors import NotFoundError, quoted_id
from microtopic.storage.database import Database
from microtopic.storage.errors import storage_errors
from microtopic.storage.models import GenerationRequestRow, LlmCallRow, TraceSpanRow
from microtopic.storage.records import (
    LLM_CALL_SPAN_KIND,
    STEP_SPAN_KIND,
    SUCCESS_OUTCOME,
    LlmCallRecord,
    RequestKind,
    RequestStatus,
    RequestSummary,
    SpanRecord,
    StepRecord,
    StoredTrace,
    require_aware,
)
from microtopic.storage.repository import call_record, step_from_json

MAX_LISTED = 500


@dataclass(frozen=True)
class RequestFilter:
    """A selection of requests: those created at `since` or later that match every filter set.

    `kind` matches generations or forwarded calls. `key_name` matches a request with
    at least one LLM call on that key. `error_code` matches a request that failed
    with that code, or that has an LLM call that failed with it, such as a 429
    (`upstream_rate_limited`) it failed over from.
    """

    since: datetime
    kind: RequestKind | None = None
    status: RequestStatus | None = None
    key_name: str | None = None
    error_code: str | None = None
    limit: int = 50

    def __post_init__(self) -> None:
        require_aware(self.since, "RequestFilter.since")
        if not 1 <= self.limit <= MAX_LISTED:
            raise ValueError(f"limit must be between 1 and {MAX_LISTED}, got {self.limit}")


class TraceStore:
    """Reads traces and recent requests, and prunes old spans. Raises `StorageError`."""

    def __init__(self, database: Database) -> None:
        self._database = database

    async def get_trace(self, request_id: str, *, not_before: datetime) -> StoredTrace:
        """Return the request and every span of its trace, ordered by start.

        Raises `NotFoundError` for an unknown id, and for a request created before
        `not_before`, whose trace the retention has dropped.
        """
        require_aware(not_before, "not_before")
        with storage_errors(self._database.url, f"read the trace of request {request_id}"):
            async with self._database.session() as session, session.begin():
                row = await session.get(GenerationRequestRow, request_id)
                if row is None:
                    raise _unknown_request(request_id)
                if row.created_at < not_before:
                    raise _pruned(request_id, row.created_at)
                calls = await _calls_of(session, [request_id])
                span_rows = await session.scalars(
                    select(TraceSpanRow).where(TraceSpanRow.request_id == request_id)
                )
                stored = [_span_record(span_row) for span_row in span_rows]

        request_calls = calls.get(request_id, [])
        steps = [step_from_json(step) for step in row.steps or []]
        spans = _joined_spans(stored, steps, request_calls)
        return StoredTrace(request=_summary(row, request_calls), spans=spans)

    async def list_requests(self, selection: RequestFilter) -> list[RequestSummary]:
        """Return the newest requests that `selection` matches, newest first."""
        statement = (
            select(GenerationRequestRow)
            .where(*_conditions(selection))
            .order_by(GenerationRequestRow.created_at.desc(), GenerationRequestRow.id)
            .limit(selection.limit)
        )

        with storage_errors(self._database.url, "list the recent requests"):
            async with self._database.session() as session, session.begin():
                rows = list(await session.scalars(statement))
                calls = await _calls_of(session, [row.id for row in rows])

        return [_summary(row, calls.get(row.id, [])) for row in rows]

    async def prune(self, *, before: datetime) -> int:
        """Delete the spans of requests created before `before`, and return how many."""
        require_aware(before, "before")
        old_requests = select(GenerationRequestRow.id).where(
            GenerationRequestRow.created_at < before
        )
        statement = delete(TraceSpanRow).where(TraceSpanRow.request_id.in_(old_requests))

        with storage_errors(self._database.url, "prune old request traces"):
            async with self._database.session() as session, session.begin():
                result = await session.execute(statement)
        # DELETE reports its row count on both SQLite and PostgreSQL.
        return int(getattr(result, "rowcount", 0) or 0)


def _conditions(selection: RequestFilter) -> list[ColumnElement[bool]]:
    request = GenerationRequestRow
    conditions: list[ColumnElement[bool]] = [request.created_at >= selection.since]
    if selection.kind is not None:
        conditions.append(request.kind == selection.kind.value)
    if selection.status is not None:
        conditions.append(request.status == selection.status.value)
    if selection.key_name is not None:
        conditions.append(_has_call(LlmCallRow.key_name == selection.key_name))
    if selection.error_code is not None:
        failed_with = request.error_code == selection.error_code
        conditions.append(failed_with | _has_call(LlmCallRow.outcome == selection.error_code))
    return conditions


def _has_call(condition: ColumnElement[bool]) -> ColumnElement[bool]:
    return exists().where(LlmCallRow.request_id == GenerationRequestRow.id, condition)


async def _calls_of(
    session: AsyncSession, request_ids: list[str]
) -> dict[str, list[LlmCallRecord]]:
    if not request_ids:
        return {}
    rows = await session.scalars(
        select(LlmCallRow)
        .where(LlmCallRow.request_id.in_(request_ids))
        .order_by(LlmCallRow.started_at, LlmCallRow.id)
    )
    calls: defaultdict[str, list[LlmCallRecord]] = defaultdict(list)
    for row in rows:
        calls[row.request_id].append(call_record(row))
    return calls


def _summary(row: GenerationRequestRow, calls: list[LlmCallRecord]) -> RequestSummary:
    kind = RequestKind(row.kind)
    # A forwarded call's input holds only these three fields (`storage.passthrough`).
    forwarded = row.input if kind is RequestKind.PASSTHROUGH else {}
    return RequestSummary(
        id=row.id,
        kind=kind,
        requested_model=forwarded.get("model"),
        max_tokens=forwarded.get("max_tokens"),
        message_count=forwarded.get("message_count"),
        course_id=row.course_id,
        subject_name=row.subject_name,
        topic_name=row.topic_name,
        status=RequestStatus(row.status),
        error_code=row.error_code,
        error_message=row.error_message,
        created_at=row.created_at,
        finished_at=row.finished_at,
        duration_ms=row.duration_ms,
        keys=sorted({call.key_name for call in calls}),
        llm_calls=len(calls),
        failed_calls=sum(not call.succeeded for call in calls),
    )


def _joined_spans(
    stored: list[SpanRecord], steps: list[StepRecord], calls: list[LlmCallRecord]
) -> list[SpanRecord]:
    """Return the stored spans, the steps and the calls as one list of spans, by start.

    Steps and calls stored before traces existed have no span id, so they get ids
    after every other one, at the top of the trace.
    """
    used_ids = [span.span_id for span in stored]
    used_ids += [step.span_id for step in steps if step.span_id is not None]
    used_ids += [call.span_id for call in calls if call.span_id is not None]
    next_ids = iter(range(max(used_ids, default=0) + 1, 2**31))

    spans = list(stored)
    spans += [_step_span(step, step.span_id or next(next_ids)) for step in steps]
    spans += [_call_span(call, call.span_id or next(next_ids)) for call in calls]
    spans.sort(key=lambda span: (span.started_at, span.span_id))
    return spans


def _step_span(step: StepRecord, span_id: int) -> SpanRecord:
    return SpanRecord(
        span_id=span_id,
        parent_id=step.parent_id,
        name=step.name,
        kind=STEP_SPAN_KIND,
        started_at=step.started_at,
        finished_at=step.finished_at,
        attributes={} if step.error is None else {"error": step.error},
    )


def _call_span(call: LlmCallRecord, span_id: int) -> SpanRecord:
    error = None if call.outcome == SUCCESS_OUTCOME else call.outcome
    attributes: dict[str, Any] = {
        "step": call.step,
        "key": call.key_name,
        "deployment": call.deployment,
        "attempt": call.attempt,
        "latency_ms": round(call.latency_ms, 3),
        "prompt_tokens": call.prompt_tokens,
        "completion_tokens": call.completion_tokens,
        "outcome": call.outcome,
        "error": error,
    }
    return SpanRecord(
        span_id=span_id,
        parent_id=call.parent_id,
        name=f"attempt {call.attempt} on {call.key_name}",
        kind=LLM_CALL_SPAN_KIND,
        started_at=call.started_at,
        finished_at=call.started_at + timedelta(milliseconds=call.latency_ms),
        attributes=attributes,
    )


def _span_record(row: TraceSpanRow) -> SpanRecord:
    return SpanRecord(
        span_id=row.span_id,
        parent_id=row.parent_id,
        name=row.name,
        kind=row.kind,
        started_at=row.started_at,
        finished_at=row.finished_at,
        attributes=row.attributes,
    )


def _unknown_request(request_id: str) -> NotFoundError:
    return NotFoundError(
        f"No request has the id {quoted_id(request_id)}. Use an id from the list of recent "
        "requests, the request_id a generation returned, or a forwarded call's X-Request-ID."
    )


def _pruned(request_id: str, created_at: datetime) -> NotFoundError:
    return NotFoundError(
        f"The trace of request {request_id!r} (created {created_at:%Y-%m-%d %H:%M:%S} UTC) "
        "is older than traces.retention_s and was pruned. Raise traces.retention_s to keep "
        "traces longer."
    )
