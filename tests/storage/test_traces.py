"""Stored traces: spans written with the outcome, read back joined, listed, pruned."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import timedelta

import pytest
from alembic import command
from sqlalchemy import text
from sqlalchemy.engine import Connection

from microtopic.errors import NotFoundError
from microtopic.storage import (
    Database,
    ForwardedCall,
    GenerationStore,
    PassthroughStore,
    RequestFilter,
    RequestKind,
    RequestStatus,
    SpanRecord,
    StepRecord,
    TraceStore,
)
from microtopic.storage.database import alembic_config
from tests.storage.builders import T0, at, make_call, make_request, make_topic

LONG_AGO = T0 - timedelta(days=365)


def new_id() -> str:
    return uuid.uuid4().hex


@pytest.fixture
def traces(database: Database) -> TraceStore:
    return TraceStore(database)


def queue_span(span_id: int, parent_id: int | None) -> SpanRecord:
    return SpanRecord(
        span_id=span_id,
        parent_id=parent_id,
        name="queue wait",
        kind="queue",
        started_at=at(0.2),
        finished_at=at(0.7),
        attributes={"attempt": 1},
    )


async def finish(
    store: GenerationStore,
    request_id: str,
    *,
    created_at_s: float = 0.0,
    calls: list[str] | None = None,
    error_code: str | None = None,
) -> None:
    """Store a finished request whose calls went to `calls`, as key:outcome pairs."""
    await store.start_request(request_id, make_request(), created_at=at(created_at_s))
    records = []
    for attempt, pair in enumerate(calls or ["east:success"], start=1):
        key_name, outcome = pair.split(":")
        records.append(make_call(key_name=key_name, outcome=outcome, attempt=attempt))
    if error_code is not None:
        await store.finish_failure(
            request_id,
            error_code=error_code,
            error_message="It failed.",
            steps=[],
            calls=records,
            finished_at=at(created_at_s + 1),
        )
        return
    await store.finish_success(
        request_id,
        topic=make_topic(),
        prompt_version="v3",
        provider="azure",
        model="gpt-4o-mini",
        prompt_tokens=10,
        completion_tokens=10,
        steps=[],
        calls=records,
        finished_at=at(created_at_s + 1),
    )


async def test_trace_joins_steps_calls_and_spans(
    store: GenerationStore, traces: TraceStore
) -> None:
    request_id = new_id()
    await store.start_request(request_id, make_request(), created_at=T0)
    step = StepRecord("plan", at(0.1), at(2.0), span_id=1, parent_id=None)
    failed = replace(make_call(key_name="west", outcome="upstream_auth_failed"), span_id=3)
    served = replace(make_call(key_name="east", attempt=2, started_at=at(1.0)), span_id=4)

    await store.finish_success(
        request_id,
        topic=make_topic(),
        prompt_version="v3",
        provider="azure",
        model="gpt-4o-mini",
        prompt_tokens=420,
        completion_tokens=96,
        steps=[step],
        calls=[replace(failed, parent_id=1), replace(served, parent_id=1)],
        finished_at=at(2.5),
        spans=[queue_span(2, 1)],
    )

    trace = await traces.get_trace(request_id, not_before=LONG_AGO)
    by_id = {span.span_id: span for span in trace.spans}
    assert sorted(by_id) == [1, 2, 3, 4, 5]
    assert by_id[1].kind == "step"
    assert by_id[1].name == "plan"
    assert by_id[2].kind == "queue"
    assert by_id[2].attributes == {"attempt": 1}
    assert [by_id[i].parent_id for i in (2, 3, 4)] == [1, 1, 1]
    assert by_id[3].kind == "llm_call"
    assert by_id[3].attributes["key"] == "west"
    assert by_id[3].attributes["error"] == "upstream_auth_failed"
    assert by_id[4].attributes["key"] == "east"
    assert by_id[4].attributes["attempt"] == 2
    assert by_id[4].attributes["error"] is None
    assert by_id[4].duration_ms == pytest.approx(812.25, abs=0.01)
    assert by_id[5].name == "store outcome"
    assert by_id[5].kind == "storage"
    assert by_id[5].parent_id is None
    starts = [span.started_at for span in trace.spans]
    assert starts == sorted(starts)


async def test_trace_summarises_its_request(store: GenerationStore, traces: TraceStore) -> None:
    request_id = new_id()
    await finish(store, request_id, calls=["west:upstream_rate_limited", "east:success"])

    trace = await traces.get_trace(request_id, not_before=LONG_AGO)

    assert trace.request.id == request_id
    assert trace.request.status is RequestStatus.SUCCEEDED
    assert trace.request.topic_name == "Newton's laws"
    assert trace.request.keys == ["east", "west"]
    assert trace.request.llm_calls == 2
    assert trace.request.failed_calls == 1
    assert trace.request.duration_ms == 1000


async def test_failed_request_keeps_its_spans(store: GenerationStore, traces: TraceStore) -> None:
    request_id = new_id()
    await store.start_request(request_id, make_request(), created_at=T0)

    await store.finish_failure(
        request_id,
        error_code="no_key_available",
        error_message="No API key is available.",
        steps=[],
        calls=[],
        finished_at=at(1),
        spans=[queue_span(1, None)],
    )

    trace = await traces.get_trace(request_id, not_before=LONG_AGO)
    assert trace.request.error_code == "no_key_available"
    assert [span.kind for span in trace.spans] == ["queue", "storage"]


async def test_unknown_request_has_no_trace(traces: TraceStore) -> None:
    with pytest.raises(NotFoundError, match="No request has the id"):
        await traces.get_trace(new_id(), not_before=LONG_AGO)


async def test_trace_older_than_retention_is_not_found(
    store: GenerationStore, traces: TraceStore
) -> None:
    request_id = new_id()
    await finish(store, request_id)

    with pytest.raises(NotFoundError, match=r"traces\.retention_s"):
        await traces.get_trace(request_id, not_before=at(60))


async def test_calls_without_span_ids_get_fresh_ids(
    store: GenerationStore, traces: TraceStore
) -> None:
    request_id = new_id()
    await finish(store, request_id, calls=["east:upstream_server_error", "west:success"])

    trace = await traces.get_trace(request_id, not_before=LONG_AGO)

    ids = [span.span_id for span in trace.spans]
    assert len(set(ids)) == len(ids) == 3
    assert all(span.parent_id is None for span in trace.spans)


async def test_list_is_newest_first_and_limited(store: GenerationStore, traces: TraceStore) -> None:
    ids = [new_id() for _ in range(3)]
    for offset_s, request_id in enumerate(ids):
        await finish(store, request_id, created_at_s=offset_s)

    listed = await traces.list_requests(RequestFilter(since=LONG_AGO, limit=2))

    assert [summary.id for summary in listed] == [ids[2], ids[1]]


async def test_list_leaves_out_requests_before_since(
    store: GenerationStore, traces: TraceStore
) -> None:
    old, new = new_id(), new_id()
    await finish(store, old, created_at_s=0)
    await finish(store, new, created_at_s=100)

    listed = await traces.list_requests(RequestFilter(since=at(50)))

    assert [summary.id for summary in listed] == [new]


async def test_list_filters_by_status(store: GenerationStore, traces: TraceStore) -> None:
    succeeded, failed = new_id(), new_id()
    await finish(store, succeeded)
    await finish(store, failed, error_code="all_keys_failed")
    running = new_id()
    await store.start_request(running, make_request(), created_at=T0)

    listed = await traces.list_requests(RequestFilter(since=LONG_AGO, status=RequestStatus.FAILED))

    assert [summary.id for summary in listed] == [failed]


async def test_list_filters_by_kind(
    store: GenerationStore, database: Database, traces: TraceStore
) -> None:
    generation = new_id()
    await finish(store, generation)
    forwarded = ForwardedCall(
        request_id=new_id(),
        requested_model="gpt-4o-mini",
        max_tokens=None,
        message_count=3,
        created_at=at(2),
        finished_at=at(3),
        error_code="all_keys_failed",
        error_message="Every key failed.",
    )
    await PassthroughStore(database).add(
        forwarded, steps=[], calls=[make_call(key_name="west", outcome="upstream_auth_failed")]
    )

    passthrough = await traces.list_requests(
        RequestFilter(since=LONG_AGO, kind=RequestKind.PASSTHROUGH)
    )
    generations = await traces.list_requests(
        RequestFilter(since=LONG_AGO, kind=RequestKind.GENERATION)
    )

    (summary,) = passthrough
    assert summary.id == forwarded.request_id
    assert summary.kind == RequestKind.PASSTHROUGH
    assert summary.status == RequestStatus.FAILED
    assert summary.error_code == "all_keys_failed"
    assert summary.message_count == 3
    assert summary.keys == ["west"]
    assert summary.topic_name is None
    assert [request.id for request in generations] == [generation]
    assert generations[0].kind == RequestKind.GENERATION
    assert generations[0].requested_model is None


async def test_list_filters_by_key(store: GenerationStore, traces: TraceStore) -> None:
    on_west, on_east = new_id(), new_id()
    await finish(store, on_west, calls=["west:upstream_timeout", "north:success"])
    await finish(store, on_east, calls=["east:success"])

    listed = await traces.list_requests(RequestFilter(since=LONG_AGO, key_name="west"))

    assert [summary.id for summary in listed] == [on_west]


async def test_list_filters_by_error_of_request_or_call(
    store: GenerationStore, traces: TraceStore
) -> None:
    failed_over, failed, clean = new_id(), new_id(), new_id()
    await finish(store, failed_over, calls=["west:upstream_rate_limited", "east:success"])
    await finish(store, failed, error_code="upstream_rate_limited", calls=[])
    await finish(store, clean)

    listed = await traces.list_requests(
        RequestFilter(since=LONG_AGO, error_code="upstream_rate_limited")
    )

    assert {summary.id for summary in listed} == {failed_over, failed}


def test_filter_rejects_limit_out_of_range() -> None:
    with pytest.raises(ValueError, match="limit"):
        RequestFilter(since=T0, limit=0)


async def test_prune_deletes_spans_of_old_requests_only(
    store: GenerationStore, traces: TraceStore
) -> None:
    old, new = new_id(), new_id()
    await finish(store, old, created_at_s=0)
    await finish(store, new, created_at_s=100)

    pruned = await traces.prune(before=at(50))

    assert pruned == 1  # the old request's "store outcome" span
    kept = await traces.get_trace(new, not_before=LONG_AGO)
    assert [span.kind for span in kept.spans] == ["llm_call", "storage"]
    stripped = await traces.get_trace(old, not_before=LONG_AGO)
    assert [span.kind for span in stripped.spans] == ["llm_call"]
    assert (await store.get_request(old)).calls == [make_call()]


def upgrade_to(connection: Connection, revision: str) -> None:
    config = alembic_config()
    config.attributes["connection"] = connection
    command.upgrade(config, revision)


async def test_upgrade_keeps_old_calls_readable(empty_database: Database) -> None:
    async with empty_database.engine.begin() as connection:
        await connection.run_sync(upgrade_to, "0001")
    request_id = new_id()
    # Written as SQL, because the current model has columns that 0001 lacks.
    async with empty_database.engine.begin() as connection:
        await connection.execute(
            text(
                "INSERT INTO generation_requests (id, course_id, subject_name, topic_name, "
                "input, status, created_at) VALUES (:id, 'physics-101', 'Mechanics', "
                "'Inertia', '{}', 'running', :at)"
            ),
            {"id": request_id, "at": T0.replace(tzinfo=None)},
        )
        await connection.execute(
            text(
                "INSERT INTO llm_calls (request_id, step, key_name, deployment, attempt, "
                "latency_ms, prompt_tokens, completion_tokens, outcome, started_at) VALUES "
                "(:id, 'plan', 'east', 'gpt-4o-mini', 1, 5.0, 1, 1, 'success', :at)"
            ),
            {"id": request_id, "at": T0.replace(tzinfo=None)},
        )

    await empty_database.upgrade()

    trace = await TraceStore(empty_database).get_trace(request_id, not_before=LONG_AGO)
    (call,) = trace.spans
    assert call.kind == "llm_call"
    assert call.attributes["key"] == "east"
    assert call.span_id == 1


async def test_failed_step_keeps_its_error(store: GenerationStore, traces: TraceStore) -> None:
    request_id = new_id()
    await store.start_request(request_id, make_request(), created_at=T0)
    step = StepRecord("write:1", at(0.1), at(0.9), span_id=1, error="all_keys_failed")

    await store.finish_failure(
        request_id,
        error_code="all_keys_failed",
        error_message="All 3 attempts failed.",
        steps=[step],
        calls=[],
        finished_at=at(1),
    )

    trace = await traces.get_trace(request_id, not_before=LONG_AGO)
    assert (await store.get_request(request_id)).steps == [step]
    assert trace.spans[0].attributes == {"error": "all_keys_failed"}
