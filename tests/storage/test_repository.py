from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, cast

import pytest
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError

from microtopic.domain import GenerationRequest
from microtopic.errors import DuplicateRequestError, NotFoundError, StorageError
from microtopic.storage import Database, GenerationStore, KeyUsage, RequestStatus
from microtopic.storage.models import GeneratedTopicRow, GenerationRequestRow
from tests.storage.builders import T0, at, make_call, make_request, make_steps, make_topic
from tests.storage.conftest import dispose_sqlite


def new_id() -> str:
    return uuid.uuid4().hex


async def finish_with_success(store: GenerationStore, request_id: str, **overrides: Any) -> None:
    arguments: dict[str, Any] = {
        "topic": make_topic(),
        "prompt_version": "v3",
        "provider": "azure",
        "model": "gpt-4o-mini",
        "prompt_tokens": 1200,
        "completion_tokens": 800,
        "steps": make_steps(),
        "calls": [make_call()],
        "finished_at": at(4.5),
    }
    arguments.update(overrides)
    await store.finish_success(request_id, **arguments)


async def test_started_request_is_running(store: GenerationStore) -> None:
    request_id = new_id()

    await store.start_request(request_id, make_request(), created_at=T0)

    stored = await store.get_request(request_id)
    assert stored.status is RequestStatus.RUNNING
    assert stored.course_id == "physics-101"
    assert stored.topic_name == "Newton's laws"
    assert stored.created_at == T0
    assert stored.finished_at is None
    assert stored.duration_ms is None
    assert stored.steps == []
    assert stored.topic is None
    assert stored.calls == []


async def test_reused_request_id_is_rejected(store: GenerationStore) -> None:
    request_id = new_id()
    await store.start_request(request_id, make_request(), created_at=T0)

    with pytest.raises(DuplicateRequestError) as caught:
        await store.start_request(request_id, make_request(), created_at=at(1))

    assert caught.value.request_id == request_id
    assert (await store.get_request(request_id)).status == RequestStatus.RUNNING


async def test_finish_success_round_trips_topic(store: GenerationStore) -> None:
    request_id = new_id()
    await store.start_request(request_id, make_request(), created_at=T0)

    await finish_with_success(store, request_id)

    stored = await store.get_request(request_id)
    assert stored.status is RequestStatus.SUCCEEDED
    assert stored.topic == make_topic()
    assert stored.finished_at == at(4.5)
    assert stored.duration_ms == 4500
    assert stored.steps == make_steps()
    assert stored.calls == [make_call()]
    assert stored.error_code is None


async def test_finish_success_counts_one_topic(store: GenerationStore) -> None:
    request_id = new_id()
    await store.start_request(request_id, make_request(), created_at=T0)

    await finish_with_success(store, request_id)

    assert await store.count_topics() == 1


async def test_finish_failure_stores_error_without_topic(store: GenerationStore) -> None:
    request_id = new_id()
    await store.start_request(request_id, make_request(), created_at=T0)
    calls = [make_call(outcome="upstream_rate_limited"), make_call(key_name="west", attempt=2)]

    await store.finish_failure(
        request_id,
        error_code="invalid_model_output",
        error_message="The writer's output failed validation twice.",
        steps=make_steps(),
        calls=calls,
        finished_at=at(6),
    )

    stored = await store.get_request(request_id)
    assert stored.status is RequestStatus.FAILED
    assert stored.error_code == "invalid_model_output"
    assert stored.error_message == "The writer's output failed validation twice."
    assert stored.duration_ms == 6000
    assert stored.steps == make_steps()
    assert stored.calls == calls
    assert stored.topic is None
    assert await store.count_topics() == 0


async def test_finish_failure_truncates_long_message(store: GenerationStore) -> None:
    request_id = new_id()
    await store.start_request(request_id, make_request(), created_at=T0)

    await store.finish_failure(
        request_id,
        error_code="all_keys_failed",
        error_message="é" * 5000,
        steps=[],
        calls=[],
        finished_at=at(1),
    )

    stored = await store.get_request(request_id)
    assert stored.error_message is not None
    assert len(stored.error_message) == 2000
    assert stored.error_message.endswith("é…")


async def test_failed_call_insert_rolls_back_finish(store: GenerationStore) -> None:
    request_id = new_id()
    await store.start_request(request_id, make_request(), created_at=T0)
    broken_call = make_call(outcome=cast(str, None))

    with pytest.raises(StorageError) as raised:
        await finish_with_success(store, request_id, calls=[make_call(), broken_call])

    stored = await store.get_request(request_id)
    assert isinstance(raised.value.__cause__, SQLAlchemyError)
    assert stored.status is RequestStatus.RUNNING
    assert stored.finished_at is None
    assert stored.topic is None
    assert stored.calls == []
    assert await store.count_topics() == 0


async def test_duplicate_topic_rolls_back_finish(
    store: GenerationStore, database: Database
) -> None:
    request_id = new_id()
    await store.start_request(request_id, make_request(), created_at=T0)
    async with database.session() as session, session.begin():
        session.add(
            GeneratedTopicRow(
                request_id=request_id,
                content=make_topic(title="Written by a concurrent writer").model_dump(mode="json"),
                prompt_version="v3",
                provider="azure",
                model="gpt-4o-mini",
                prompt_tokens=1,
                completion_tokens=1,
                created_at=at(2),
            )
        )

    with pytest.raises(StorageError) as raised:
        await finish_with_success(store, request_id)

    stored = await store.get_request(request_id)
    assert "violates a constraint" in raised.value.message
    assert stored.status is RequestStatus.RUNNING
    assert stored.calls == []
    assert await store.count_topics() == 1


async def test_second_finish_is_rejected(store: GenerationStore) -> None:
    request_id = new_id()
    await store.start_request(request_id, make_request(), created_at=T0)
    await finish_with_success(store, request_id)

    with pytest.raises(StorageError, match="already succeeded"):
        await store.finish_failure(
            request_id,
            error_code="upstream_timeout",
            error_message="Timed out.",
            steps=[],
            calls=[make_call(outcome="upstream_timeout")],
            finished_at=at(9),
        )

    stored = await store.get_request(request_id)
    assert stored.status is RequestStatus.SUCCEEDED
    assert stored.error_code is None
    assert stored.calls == [make_call()]
    assert await store.count_topics() == 1


async def test_finish_unknown_request_raises_not_found(store: GenerationStore) -> None:
    request_id = new_id()

    with pytest.raises(NotFoundError, match=request_id):
        await finish_with_success(store, request_id)

    assert await store.count_topics() == 0


async def test_get_unknown_request_raises_not_found(store: GenerationStore) -> None:
    request_id = new_id()

    with pytest.raises(NotFoundError) as raised:
        await store.get_request(request_id)

    assert request_id in raised.value.message
    assert raised.value.code == "not_found"


async def test_emoji_and_rtl_text_round_trip(store: GenerationStore) -> None:
    request_id = new_id()
    topic_name = "قوانين نيوتن 🍎"
    topic = make_topic(
        topic_name=topic_name,
        title="החוק הראשון 🚀",
        explanation="Inertia: القصور الذاتي. 👩🏽‍🔬 Mixed: שלום, world!",
    )
    await store.start_request(
        request_id, make_request(course_id="فيزياء-١٠١", topic_name=topic_name), created_at=T0
    )

    await finish_with_success(store, request_id, topic=topic)

    stored = await store.get_request(request_id)
    assert stored.course_id == "فيزياء-١٠١"
    assert stored.topic_name == topic_name
    assert stored.topic == topic


async def test_emoji_error_message_round_trips(store: GenerationStore) -> None:
    request_id = new_id()
    await store.start_request(request_id, make_request(), created_at=T0)
    message = "فشل الطلب 💥 after 3 attempts"

    await store.finish_failure(
        request_id,
        error_code="all_keys_failed",
        error_message=message,
        steps=[],
        calls=[],
        finished_at=at(1),
    )

    stored = await store.get_request(request_id)
    assert stored.error_message == message


async def test_key_usage_aggregates_calls_per_key(store: GenerationStore) -> None:
    first, second = new_id(), new_id()
    await store.start_request(first, make_request(), created_at=T0)
    await store.start_request(second, make_request(), created_at=at(10))
    await finish_with_success(
        store,
        first,
        calls=[
            make_call(key_name="east", outcome="upstream_rate_limited", started_at=at(1)),
            make_call(key_name="west", attempt=2, started_at=at(2)),
            make_call(key_name="east", step="writer:1", started_at=at(3)),
        ],
    )
    await store.finish_failure(
        second,
        error_code="all_keys_failed",
        error_message="All 2 attempts failed.",
        steps=[],
        calls=[
            make_call(key_name="west", outcome="upstream_timeout", started_at=at(11)),
            make_call(key_name="east", outcome="upstream_server_error", started_at=at(12)),
        ],
        finished_at=at(13),
    )

    usage = await store.key_usage()

    assert usage == [
        KeyUsage(key_name="east", usage_count=1, error_count=2, last_used=at(12)),
        KeyUsage(key_name="west", usage_count=1, error_count=1, last_used=at(11)),
    ]


async def test_key_usage_empty_without_calls(store: GenerationStore) -> None:
    await store.start_request(new_id(), make_request(), created_at=T0)

    usage = await store.key_usage()

    assert usage == []


async def test_datetimes_come_back_in_utc(store: GenerationStore) -> None:
    request_id = new_id()
    india = timezone(timedelta(hours=5, minutes=30))
    created_at = datetime(2025, 3, 14, 15, 0, tzinfo=india)
    started_at = created_at + timedelta(seconds=1)
    await store.start_request(request_id, make_request(), created_at=created_at)

    await finish_with_success(
        store,
        request_id,
        calls=[make_call(started_at=started_at)],
        finished_at=created_at + timedelta(seconds=2),
    )

    stored = await store.get_request(request_id)
    usage = await store.key_usage()
    assert stored.created_at == created_at
    assert stored.created_at.tzinfo is UTC
    assert stored.finished_at is not None
    assert stored.finished_at.tzinfo is UTC
    assert stored.duration_ms == 2000
    assert stored.calls[0].started_at == started_at
    assert stored.calls[0].started_at.tzinfo is UTC
    assert stored.steps[0].started_at.tzinfo == UTC
    assert usage[0].last_used is not None
    assert usage[0].last_used.tzinfo is UTC


async def test_naive_created_at_is_rejected(store: GenerationStore) -> None:
    naive = datetime(2025, 3, 14, 9, 0)

    with pytest.raises(ValueError, match="timezone-aware"):
        await store.start_request(new_id(), make_request(), created_at=naive)


async def test_store_without_tables_explains_upgrade(
    sqlite_database: Database,
) -> None:
    store = GenerationStore(sqlite_database)

    with pytest.raises(StorageError) as raised:
        await store.get_request(new_id())

    assert "microtopic db upgrade" in raised.value.message
    assert isinstance(raised.value.__cause__, SQLAlchemyError)


async def test_unreachable_database_raises_storage_error(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'missing-directory' / 'microtopic.db'}"
    database = Database(url)
    store = GenerationStore(database)

    try:
        with pytest.raises(StorageError) as raised:
            await store.count_topics()
    finally:
        await dispose_sqlite(database)

    assert "Check the `database_url` setting," in raised.value.message
    assert "missing-directory" in raised.value.message


# Emoji (a ZWJ sequence and a flag among them), right-to-left scripts, and combining
# marks: a decomposed é and a Vietnamese letter with two marks stay decomposed.
UNICODE_TEXTS = [
    pytest.param("Fractions 🍕 by 👩\u200d🏫 in 🇫🇷", id="emoji"),
    pytest.param("المعادلات الخطية", id="arabic"),
    pytest.param("משוואות לינאריות", id="hebrew"),
    pytest.param("Cafe\u0301 and Vie\u0302\u0323t", id="combining"),
    pytest.param("Slope ميل שיפוע 📈", id="mixed-direction"),
]


@pytest.mark.parametrize("text", UNICODE_TEXTS)
async def test_unicode_text_round_trips(
    store: GenerationStore, database: Database, text: str
) -> None:
    request_id = new_id()
    request = GenerationRequest(
        course_id=text,
        subject_name=text,
        topic_name=text,
        microtopics=[text, "Other"],
        audience=text,
    )
    topic = make_topic(topic_name=text, title=text, explanation=f"{text}\n\n{text}")

    await store.start_request(request_id, request, created_at=T0)
    await finish_with_success(store, request_id, topic=topic, model=text)

    stored = await store.get_request(request_id)
    assert stored.course_id == text
    assert stored.subject_name == text
    assert stored.topic_name == text
    assert stored.topic == topic
    assert stored.topic is not None
    assert stored.topic.microtopics[0].title == text
    async with database.session() as session:
        row = await session.get(GenerationRequestRow, request_id)
        assert row is not None
        assert row.input == request.model_dump(mode="json")
        topic_row = await session.scalar(
            select(GeneratedTopicRow).where(GeneratedTopicRow.request_id == request_id)
        )
        assert topic_row is not None
        assert topic_row.model == text


async def test_generated_nul_is_dropped_before_insert(store: GenerationStore) -> None:
    # PostgreSQL cannot store NUL in text. Generated text is cleaned when the lesson
    # models validate it (microtopic.domain), so it never reaches an insert.
    request_id = new_id()
    topic = make_topic(title="The\x00 first law", explanation="A body\x00 keeps moving.\x0c")
    await store.start_request(request_id, make_request(), created_at=T0)

    await finish_with_success(store, request_id, topic=topic)

    stored = await store.get_request(request_id)
    assert stored.topic is not None
    assert stored.topic.microtopics[0].title == "The first law"
    assert stored.topic.microtopics[0].explanation == "A body keeps moving."
