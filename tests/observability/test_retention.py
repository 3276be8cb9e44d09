"""The trace pruner: deletes old spans at start and each interval, and survives failures."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from microtopic.config import TracesConfig
from microtopic.observability.retention import TracePruner
from microtopic.storage import Database, GenerationStore, TraceStore
from tests.storage.builders import make_call, make_request, make_topic
from tests.storage.conftest import dispose_sqlite, sqlite_url


@pytest.fixture
async def database(tmp_path: Path) -> AsyncIterator[Database]:
    database = Database(sqlite_url(tmp_path))
    await database.upgrade()
    yield database
    await dispose_sqlite(database)


async def store_request(database: Database, *, age_s: float) -> str:
    """Store a succeeded request created `age_s` seconds ago, with its `store outcome` span."""
    store = GenerationStore(database)
    request_id = uuid.uuid4().hex
    created_at = datetime.now(UTC) - timedelta(seconds=age_s)
    await store.start_request(request_id, make_request(), created_at=created_at)
    await store.finish_success(
        request_id,
        topic=make_topic(),
        prompt_version="v3",
        provider="azure",
        model="gpt-4o-mini",
        prompt_tokens=1,
        completion_tokens=1,
        steps=[],
        calls=[make_call(started_at=created_at)],
        finished_at=created_at + timedelta(seconds=1),
    )
    return request_id


async def span_kinds(traces: TraceStore, request_id: str) -> list[str]:
    trace = await traces.get_trace(request_id, not_before=datetime(2000, 1, 1, tzinfo=UTC))
    return [span.kind for span in trace.spans]


async def test_prune_deletes_spans_past_retention(database: Database) -> None:
    traces = TraceStore(database)
    pruner = TracePruner(traces, TracesConfig(retention_s=60))
    old = await store_request(database, age_s=120)
    new = await store_request(database, age_s=0)

    deleted = await pruner.prune()

    assert deleted == 1
    assert await span_kinds(traces, old) == ["llm_call"]
    assert await span_kinds(traces, new) == ["llm_call", "storage"]


def test_oldest_kept_is_retention_ago() -> None:
    pruner = TracePruner(TraceStore(Database("sqlite+aiosqlite://")), TracesConfig(retention_s=90))

    age = datetime.now(UTC) - pruner.oldest_kept()

    assert timedelta(seconds=89) < age < timedelta(seconds=91)


async def test_started_pruner_prunes_at_once(database: Database) -> None:
    traces = TraceStore(database)
    old = await store_request(database, age_s=120)
    pruner = TracePruner(traces, TracesConfig(retention_s=60, prune_interval_s=3600))

    pruner.start()
    try:
        for _ in range(200):
            if await span_kinds(traces, old) == ["llm_call"]:
                break
            await asyncio.sleep(0.01)
    finally:
        await pruner.stop()

    assert await span_kinds(traces, old) == ["llm_call"]


async def test_failed_prune_is_logged_and_retried(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # A database whose schema was never created: every prune fails.
    database = Database(sqlite_url(tmp_path))
    pruner = TracePruner(TraceStore(database), TracesConfig(prune_interval_s=0.01))

    pruner.start()
    try:
        for _ in range(200):
            if len(caplog.records) >= 2:
                break
            await asyncio.sleep(0.01)
    finally:
        await pruner.stop()
        await dispose_sqlite(database)

    assert len(caplog.records) >= 2
    assert all("could not prune old traces" in record.getMessage() for record in caplog.records)
    assert all(record.levelname == "WARNING" for record in caplog.records)
