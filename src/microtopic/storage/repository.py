"""The generation store: requests, the topics they produce and every LLM call they make.

A request is inserted as running when it starts and finished exactly once, as
succeeded or failed. Each finish is one transaction, so a reader sees either the
running request or the finished one with all of its topic, steps, calls and the
spans of its trace (`microtopic.storage.traces` reads those).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError
from sqlalchemy import case, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from microtopic.domain import GeneratedTopic, GenerationRequest
from microtopic.errors import DuplicateRequestError, NotFoundError, StorageError, quoted_id
from microtopic.storage.database import Database, uninterruptible
from microtopic.storage.errors import storage_errors
from microtopic.storage.job_records import ItemLease
from microtopic.storage.jobs import finish_item_success
from microtopic.storage.models import (
    ERROR_MESSAGE_LENGTH,
    GeneratedTopicRow,
    GenerationRequestRow,
    LlmCallRow,
    TraceSpanRow,
)
from microtopic.storage.records import (
    STORAGE_SPAN_KIND,
    SUCCESS_OUTCOME,
    KeyUsage,
    LlmCallRecord,
    RequestKind,
    RequestStatus,
    SpanRecord,
    StepRecord,
    StoredRequest,
    milliseconds_between,
    require_aware,
    truncate,
)


class GenerationStore:
    """Reads and writes generation requests, and raises `StorageError` for any database error.

    Each method runs to its end even when its caller is cancelled (see `uninterruptible`).
    """

    def __init__(self, database: Database) -> None:
        self._database = database

    @uninterruptible
    async def start_request(
        self, request_id: str, request: GenerationRequest, *, created_at: datetime
    ) -> None:
        """Insert the request with status "running"."""
        require_aware(created_at, "created_at")
        row = GenerationRequestRow(
            id=request_id,
            course_id=request.course_id,
            subject_name=request.subject_name,
            topic_name=request.topic_name,
            input=request.model_dump(mode="json"),
            status=RequestStatus.RUNNING,
            created_at=created_at,
        )

        with storage_errors(self._database.url, f"start generation request {request_id}"):
            try:
                async with self._database.session() as session, session.begin():
                    session.add(row)
            except IntegrityError:
                # The id is the only unique column here, so the conflict is a reused id.
                raise DuplicateRequestError(
                    f"The request id {request_id!r} is already used. Send a new X-Request-ID "
                    "(or none) for each generation.",
                    request_id=request_id,
                ) from None

    @uninterruptible
    async def finish_success(
        self,
        request_id: str,
        *,
        topic: GeneratedTopic,
        prompt_version: str,
        provider: str,
        model: str,
        prompt_tokens: int,
        completion_tokens: int,
        steps: list[StepRecord],
        calls: list[LlmCallRecord],
        finished_at: datetime,
        lease: ItemLease | None = None,
        spans: Sequence[SpanRecord] = (),
    ) -> None:
        """Mark the running request succeeded and insert its topic, calls and spans, all or
        nothing.

        With `lease`, the request is an attempt at a job item, and the item is marked
        succeeded in the same transaction. The trace gets one more span, `store
        outcome`, that times this write up to its last insert before the commit.
        Raises `NotFoundError` for an unknown id, `LeaseLostError` when the attempt
        no longer holds the item, and `StorageError` when the request is already
        finished or the write fails; in each case nothing is written.
        """
        require_aware(finished_at, "finished_at")
        storing_since = datetime.now(UTC)
        topic_row = GeneratedTopicRow(
            request_id=request_id,
            content=topic.model_dump(mode="json"),
            prompt_version=prompt_version,
            provider=provider,
            model=model,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            created_at=finished_at,
        )

        action = f"store the result of generation request {request_id}"
        with storage_errors(self._database.url, action):
            async with self._database.session() as session, session.begin():
                await _finish_request(
                    session,
                    request_id,
                    status=RequestStatus.SUCCEEDED,
                    values={"steps": steps_to_json(steps)},
                    finished_at=finished_at,
                )
                if lease is not None:
                    await finish_item_success(session, lease, finished_at=finished_at)
                session.add(topic_row)
                session.add_all(call_rows(request_id, calls))
                await add_spans(session, request_id, spans, steps, calls, storing_since)

    @uninterruptible
    async def finish_failure(
        self,
        request_id: str,
        *,
        error_code: str,
        error_message: str,
        steps: list[StepRecord],
        calls: list[LlmCallRecord],
        finished_at: datetime,
        spans: Sequence[SpanRecord] = (),
    ) -> None:
        """Mark the running request failed and insert its calls and spans, all or nothing.

        `error_message` is cut to its first 2000 characters. Adds the `store outcome`
        span and raises like `finish_success`.
        """
        require_aware(finished_at, "finished_at")
        storing_since = datetime.now(UTC)
        values = {
            "error_code": error_code,
            "error_message": truncate(error_message, ERROR_MESSAGE_LENGTH),
            "steps": steps_to_json(steps),
        }

        action = f"store the failure of generation request {request_id}"
        with storage_errors(self._database.url, action):
            async with self._database.session() as session, session.begin():
                await _finish_request(
                    session,
                    request_id,
                    status=RequestStatus.FAILED,
                    values=values,
                    finished_at=finished_at,
                )
                session.add_all(call_rows(request_id, calls))
                await add_spans(session, request_id, spans, steps, calls, storing_since)

    @uninterruptible
    async def get_request(self, request_id: str) -> StoredRequest:
        """Return the request with its topic and calls; raise `NotFoundError` for an unknown id."""
        with storage_errors(self._database.url, f"read generation request {request_id}"):
            async with self._database.session() as session, session.begin():
                row = await session.get(GenerationRequestRow, request_id)
                # A forwarded call is stored as a request too, but it is no generation.
                if row is None or row.kind != RequestKind.GENERATION:
                    raise _request_not_found(request_id)
                topic_row = await session.scalar(
                    select(GeneratedTopicRow).where(GeneratedTopicRow.request_id == request_id)
                )
                call_rows = await session.scalars(
                    select(LlmCallRow)
                    .where(LlmCallRow.request_id == request_id)
                    .order_by(LlmCallRow.started_at, LlmCallRow.id)
                )
                calls = [call_record(call_row) for call_row in call_rows]

        return _stored_request(row, topic_row, calls)

    @uninterruptible
    async def key_usage(self) -> list[KeyUsage]:
        """Return, per key name, its successful calls, failed calls and latest call start."""
        succeeded = case((LlmCallRow.outcome == SUCCESS_OUTCOME, 1), else_=0)
        failed = case((LlmCallRow.outcome == SUCCESS_OUTCOME, 0), else_=1)
        statement = (
            select(
                LlmCallRow.key_name,
                func.sum(succeeded),
                func.sum(failed),
                func.max(LlmCallRow.started_at),
            )
            .group_by(LlmCallRow.key_name)
            .order_by(LlmCallRow.key_name)
        )

        with storage_errors(self._database.url, "read the usage of the keys"):
            async with self._database.session() as session, session.begin():
                rows = (await session.execute(statement)).all()

        return [
            KeyUsage(
                key_name=key_name,
                usage_count=int(usage_count),
                error_count=int(error_count),
                last_used=last_used,
            )
            for key_name, usage_count, error_count, last_used in rows
        ]

    @uninterruptible
    async def count_topics(self) -> int:
        """Return how many topics have been generated and stored."""
        statement = select(func.count()).select_from(GeneratedTopicRow)
        with storage_errors(self._database.url, "count the generated topics"):
            async with self._database.session() as session, session.begin():
                count = await session.scalar(statement)
        return int(count or 0)


async def _finish_request(
    session: AsyncSession,
    request_id: str,
    *,
    status: RequestStatus,
    values: dict[str, Any],
    finished_at: datetime,
) -> None:
    # The first statement is the UPDATE, guarded by the status, so that two finishes
    # of one request cannot both pass. On SQLite it also takes the write lock at
    # once: a transaction that read first and wrote later would fail with "database
    # is locked" if another writer committed in between.
    table = GenerationRequestRow
    finish = (
        update(table)
        .where(table.id == request_id, table.status == RequestStatus.RUNNING)
        .values(status=status, finished_at=finished_at, **values)
        .returning(table.created_at)
    )
    created_at = (await session.execute(finish)).scalar_one_or_none()
    if created_at is None:
        raise await _not_running_error(session, request_id)

    duration_ms = milliseconds_between(created_at, finished_at)
    await session.execute(
        update(table).where(table.id == request_id).values(duration_ms=duration_ms)
    )


async def _not_running_error(session: AsyncSession, request_id: str) -> Exception:
    status = await session.scalar(
        select(GenerationRequestRow.status).where(GenerationRequestRow.id == request_id)
    )
    if status is None:
        return _request_not_found(request_id)
    return StorageError(
        f"Generation request {request_id} is already {status}, and a request is "
        "finished only once. Start a new request to generate the topic again."
    )


async def add_spans(
    session: AsyncSession,
    request_id: str,
    spans: Sequence[SpanRecord],
    steps: list[StepRecord],
    calls: list[LlmCallRecord],
    storing_since: datetime,
) -> None:
    """Add the trace's spans, then the span of this write, timed up to its last insert.

    `steps` and `calls` are only read, for the span ids they already use.
    """
    session.add_all(_span_row(request_id, span) for span in spans)
    await session.flush()

    used_ids = [span.span_id for span in spans]
    used_ids += [step.span_id for step in steps if step.span_id is not None]
    used_ids += [call.span_id for call in calls if call.span_id is not None]
    storing = SpanRecord(
        span_id=max(used_ids, default=0) + 1,
        parent_id=None,
        name="store outcome",
        kind=STORAGE_SPAN_KIND,
        started_at=storing_since,
        finished_at=datetime.now(UTC),
    )
    session.add(_span_row(request_id, storing))


def _span_row(request_id: str, span: SpanRecord) -> TraceSpanRow:
    return TraceSpanRow(
        request_id=request_id,
        span_id=span.span_id,
        parent_id=span.parent_id,
        name=span.name,
        kind=span.kind,
        started_at=span.started_at,
        finished_at=span.finished_at,
        attributes=dict(span.attributes),
    )


def _request_not_found(request_id: str) -> NotFoundError:
    return NotFoundError(
        f"No generation request has the id {quoted_id(request_id)}. Use the id returned when "
        "the request was created."
    )


def steps_to_json(steps: list[StepRecord]) -> list[dict[str, Any]]:
    return [
        {
            "name": step.name,
            "started_at": step.started_at.astimezone(UTC).isoformat(),
            "finished_at": step.finished_at.astimezone(UTC).isoformat(),
            "duration_ms": step.duration_ms,
            "span_id": step.span_id,
            "parent_id": step.parent_id,
            "error": step.error,
        }
        for step in steps
    ]


def step_from_json(data: dict[str, Any]) -> StepRecord:
    """Return the step stored as `data` in `generation_requests.steps`."""
    # `duration_ms` is stored for readers of the raw table; the record computes it.
    # Steps stored before traces existed have no span ids.
    return StepRecord(
        name=data["name"],
        started_at=datetime.fromisoformat(data["started_at"]),
        finished_at=datetime.fromisoformat(data["finished_at"]),
        span_id=data.get("span_id"),
        parent_id=data.get("parent_id"),
        error=data.get("error"),
    )


def call_rows(request_id: str, calls: list[LlmCallRecord]) -> list[LlmCallRow]:
    return [
        LlmCallRow(
            request_id=request_id,
            step=call.step,
            key_name=call.key_name,
            deployment=call.deployment,
            attempt=call.attempt,
            latency_ms=call.latency_ms,
            prompt_tokens=call.prompt_tokens,
            completion_tokens=call.completion_tokens,
            outcome=call.outcome,
            started_at=call.started_at,
            span_id=call.span_id,
            parent_id=call.parent_id,
        )
        for call in calls
    ]


def call_record(row: LlmCallRow) -> LlmCallRecord:
    """Return the LLM call stored as `row`."""
    return LlmCallRecord(
        step=row.step,
        key_name=row.key_name,
        deployment=row.deployment,
        attempt=row.attempt,
        latency_ms=row.latency_ms,
        prompt_tokens=row.prompt_tokens,
        completion_tokens=row.completion_tokens,
        outcome=row.outcome,
        started_at=row.started_at,
        span_id=row.span_id,
        parent_id=row.parent_id,
    )


def _stored_request(
    row: GenerationRequestRow, topic_row: GeneratedTopicRow | None, calls: list[LlmCallRecord]
) -> StoredRequest:
    # Only generations are read here, and a generation's topic columns are set.
    assert row.course_id is not None
    assert row.subject_name is not None
    assert row.topic_name is not None
    return StoredRequest(
        id=row.id,
        course_id=row.course_id,
        subject_name=row.subject_name,
        topic_name=row.topic_name,
        status=RequestStatus(row.status),
        error_code=row.error_code,
        error_message=row.error_message,
        created_at=row.created_at,
        finished_at=row.finished_at,
        duration_ms=row.duration_ms,
        steps=[step_from_json(step) for step in row.steps or []],
        topic=_topic_from_row(topic_row) if topic_row is not None else None,
        calls=calls,
    )


def _topic_from_row(row: GeneratedTopicRow) -> GeneratedTopic:
    try:
        return GeneratedTopic.model_validate(row.content)
    except ValidationError as exc:
        raise StorageError(
            f"The topic stored for generation request {row.request_id} no longer "
            "matches the current lesson schema. Generate the topic again."
        ) from exc
