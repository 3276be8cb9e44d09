"""The content cache around a generation: hits, retries, failures, outages, flight across processes.

The generation here is a function that counts its runs; the tests of the service
run the real pipeline against the simulator.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
import redis.asyncio

from microtopic.cache import CachedTopic, MemoryBackend, RedisBackend, TopicCache
from microtopic.domain import GeneratedTopic, GenerationRequest
from microtopic.errors import ContentFilteredError, DeadlineExceededError
from tests.storage.builders import make_topic

REQUEST = GenerationRequest(course_id="physics-101", subject_name="Mechanics", topic_name="Laws")
MODELS = ["azure:gpt-4o-mini:json_schema"]


class Generation:
    """A generation that counts its runs; it can be slowed down or made to fail."""

    def __init__(self, *, delay_s: float = 0.0, error: Exception | None = None) -> None:
        self.runs = 0
        self.delay_s = delay_s
        self.error = error

    async def __call__(self) -> GeneratedTopic:
        self.runs += 1
        await asyncio.sleep(self.delay_s)
        if self.error is not None:
            raise self.error
        return make_topic(title=f"Run {self.runs}")


def to_entry(topic: GeneratedTopic) -> CachedTopic:
    return CachedTopic(
        topic=topic,
        prompt_version="planner@1",
        models=MODELS,
        request_id=topic.microtopics[0].title,
        created_at=datetime.now(UTC),
    )


def memory_cache(**options: Any) -> TopicCache:
    return TopicCache(
        MemoryBackend(max_entries=10),
        ttl_s=60,
        prompt_version="planner@1",
        models=MODELS,
        lock_ttl_s=60,
        **options,
    )


def redis_cache(redis_url: str, namespace: str, **options: Any) -> TopicCache:
    backend = RedisBackend.from_url(redis_url, namespace=namespace)
    options = {"lock_ttl_s": 60, "deadline_s": 30, "poll_interval_s": 0.02, **options}
    return TopicCache(
        backend, ttl_s=60, prompt_version="planner@1", models=MODELS, locks=backend, **options
    )


@pytest.fixture
async def shared_caches(
    redis_url: str, redis_namespace: str
) -> AsyncIterator[tuple[TopicCache, TopicCache]]:
    """Two caches with Redis connections of their own, as two processes would have."""
    first = redis_cache(redis_url, redis_namespace)
    second = redis_cache(redis_url, redis_namespace)
    yield first, second
    await first.aclose()
    await second.aclose()


async def serve(
    cache: TopicCache,
    generation: Generation,
    request: GenerationRequest = REQUEST,
    *,
    deadline: float | None = None,
) -> GeneratedTopic | CachedTopic:
    return await cache.get_or_generate(request, generation, to_entry, deadline=deadline)


async def wait_for_lock(cache: TopicCache) -> None:
    """Return once a leader holds the Redis lock of REQUEST, failing after 5 s."""
    backend = cache.backend
    assert isinstance(backend, RedisBackend)
    for _ in range(500):
        _, locked = await backend.peek(cache.key_for(REQUEST))
        if locked:
            return
        await asyncio.sleep(0.01)
    pytest.fail("No leader took the lock within 5 s.")


def title_of(served: GeneratedTopic | CachedTopic) -> str:
    topic = served.topic if isinstance(served, CachedTopic) else served
    return topic.microtopics[0].title


async def test_second_request_is_hit() -> None:
    cache = memory_cache()
    generation = Generation()

    first = await serve(cache, generation)
    second = await serve(cache, generation)

    assert isinstance(first, GeneratedTopic)
    assert isinstance(second, CachedTopic)
    assert second.topic == first
    assert generation.runs == 1


async def test_retry_generates_and_replaces_entry() -> None:
    cache = memory_cache()
    generation = Generation()
    await serve(cache, generation)

    retried = await serve(cache, generation, REQUEST.model_copy(update={"is_retry": True}))
    later = await serve(cache, generation)

    assert isinstance(retried, GeneratedTopic)
    assert generation.runs == 2
    assert isinstance(later, CachedTopic)
    assert title_of(later) == "Run 2"


async def test_failed_generation_is_not_cached() -> None:
    cache = memory_cache()
    generation = Generation(error=ContentFilteredError("Filtered.", categories=["hate"]))
    with pytest.raises(ContentFilteredError):
        await serve(cache, generation)

    generation.error = None
    served = await serve(cache, generation)

    assert isinstance(served, GeneratedTopic)
    assert generation.runs == 2


async def test_entry_that_no_longer_validates_is_miss(caplog: pytest.LogCaptureFixture) -> None:
    cache = memory_cache()
    await cache.backend.set(cache.key_for(REQUEST), '{"topic": {"old": "schema"}}', ttl_s=60)
    generation = Generation()

    served = await serve(cache, generation)

    assert isinstance(served, GeneratedTopic)
    assert "no longer validates" in caplog.text
    assert isinstance(await cache.read(cache.key_for(REQUEST)), CachedTopic)


async def test_concurrent_requests_generate_once() -> None:
    cache = memory_cache()
    generation = Generation(delay_s=0.05)

    served = await asyncio.gather(*(serve(cache, generation) for _ in range(50)))

    assert generation.runs == 1
    assert sum(isinstance(item, GeneratedTopic) for item in served) == 1
    assert {title_of(item) for item in served} == {"Run 1"}


async def test_outage_skips_cache_with_one_warning(
    closed_redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    cache = redis_cache(closed_redis_url, "microtopic-test-closed")
    generation = Generation()

    served = [await serve(cache, generation) for _ in range(3)]
    await cache.aclose()

    assert all(isinstance(item, GeneratedTopic) for item in served)
    assert generation.runs == 3
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1
    assert "content cache is skipped" in warnings[0].getMessage()
    assert "closed-port-password" not in caplog.text


async def test_outage_keeps_single_flight_in_process(closed_redis_url: str) -> None:
    cache = redis_cache(closed_redis_url, "microtopic-test-closed")
    generation = Generation(delay_s=0.05)

    await asyncio.gather(*(serve(cache, generation) for _ in range(10)))
    await cache.aclose()

    assert generation.runs == 1


async def test_two_processes_generate_once(
    shared_caches: tuple[TopicCache, TopicCache],
) -> None:
    first, second = shared_caches
    generation = Generation(delay_s=0.2)

    served = await asyncio.gather(
        *(serve(first, generation) for _ in range(5)),
        *(serve(second, generation) for _ in range(5)),
    )

    assert generation.runs == 1
    assert sum(isinstance(item, GeneratedTopic) for item in served) == 1
    assert {title_of(item) for item in served} == {"Run 1"}


async def test_failed_leader_elsewhere_hands_over(
    shared_caches: tuple[TopicCache, TopicCache],
) -> None:
    first, second = shared_caches
    failing = Generation(delay_s=0.2, error=ContentFilteredError("Filtered.", categories=[]))
    working = Generation()
    leader = asyncio.create_task(serve(first, failing))
    await wait_for_lock(first)

    served = await serve(second, working)

    with pytest.raises(ContentFilteredError):
        await leader
    assert isinstance(served, GeneratedTopic)
    assert failing.runs == 1
    assert working.runs == 1


async def test_expired_lock_of_dead_leader_is_taken_over(
    shared_caches: tuple[TopicCache, TopicCache], redis_url: str, redis_namespace: str
) -> None:
    cache, _ = shared_caches
    key = cache.key_for(REQUEST)
    client = redis.asyncio.Redis.from_url(redis_url)
    # The lock of a leader whose process died: no process releases it, so it only expires.
    await client.set(f"{redis_namespace}:cache:lock:{key}", "dead-leader", px=300)
    await client.aclose()
    generation = Generation()
    started = time.monotonic()

    served = await serve(cache, generation)

    assert isinstance(served, GeneratedTopic)
    assert generation.runs == 1
    assert time.monotonic() - started >= 0.25


async def test_wait_for_other_process_ends_at_deadline(
    shared_caches: tuple[TopicCache, TopicCache],
) -> None:
    first, second = shared_caches
    slow = Generation(delay_s=1.0)
    leader = asyncio.create_task(serve(first, slow))
    await wait_for_lock(first)
    follower_generation = Generation()

    with pytest.raises(DeadlineExceededError) as raised:
        await serve(second, follower_generation, deadline=time.monotonic() + 0.2)

    assert raised.value.deadline_s == 30
    assert follower_generation.runs == 0
    assert isinstance(await leader, GeneratedTopic)


async def test_cancelled_leader_releases_lock_at_once(
    shared_caches: tuple[TopicCache, TopicCache],
) -> None:
    first, second = shared_caches
    slow = Generation(delay_s=10.0)
    leader = asyncio.create_task(serve(first, slow))
    await wait_for_lock(first)
    leader.cancel()
    with pytest.raises(asyncio.CancelledError):
        await leader
    generation = Generation()

    served = await asyncio.wait_for(serve(second, generation), 2)

    assert isinstance(served, GeneratedTopic)
    assert generation.runs == 1


async def test_leader_renews_lock_while_generating(redis_url: str, redis_namespace: str) -> None:
    leader = redis_cache(redis_url, redis_namespace, lock_ttl_s=0.3)
    other = redis_cache(redis_url, redis_namespace, lock_ttl_s=0.3)
    generation = Generation(delay_s=1.0)
    leading = asyncio.create_task(serve(leader, generation))
    await wait_for_lock(leader)

    await asyncio.sleep(0.8)  # more than twice the lock's TTL
    backend = other.backend
    assert isinstance(backend, RedisBackend)
    _, still_locked = await backend.peek(other.key_for(REQUEST))
    served = await leading
    await leader.aclose()
    await other.aclose()

    assert still_locked
    assert isinstance(served, GeneratedTopic)
    assert generation.runs == 1
