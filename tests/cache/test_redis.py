"""The Redis backend against the real server: entries, expiry, locks and an unreachable server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import redis.asyncio

from microtopic.cache.redis import RedisBackend
from microtopic.errors import RedisUnavailableError
from microtopic.redis_client import describe_redis_url

KEY = "0" * 64


@pytest.fixture
async def backend(redis_url: str, redis_namespace: str) -> AsyncIterator[RedisBackend]:
    backend = RedisBackend.from_url(redis_url, namespace=redis_namespace)
    yield backend
    await backend.aclose()


@pytest.fixture
async def raw_client(redis_url: str) -> AsyncIterator[redis.asyncio.Redis]:
    client = redis.asyncio.Redis.from_url(redis_url, decode_responses=True)
    yield client
    await client.aclose()


async def test_entry_is_stored_under_namespace(
    backend: RedisBackend, raw_client: redis.asyncio.Redis, redis_namespace: str
) -> None:
    await backend.set(KEY, '{"topic": "é 🎓"}', ttl_s=60)

    assert await backend.get(KEY) == '{"topic": "é 🎓"}'
    assert await raw_client.get(f"{redis_namespace}:cache:topic:{KEY}") == '{"topic": "é 🎓"}'


async def test_missing_entry_is_none(backend: RedisBackend) -> None:
    assert await backend.get(KEY) is None


async def test_ttl_is_redis_expiry(
    backend: RedisBackend, raw_client: redis.asyncio.Redis, redis_namespace: str
) -> None:
    await backend.set(KEY, "value", ttl_s=7 * 86_400)

    ttl_ms = await raw_client.pttl(f"{redis_namespace}:cache:topic:{KEY}")

    assert 7 * 86_400_000 - 5000 < ttl_ms <= 7 * 86_400_000


async def test_entry_expires(backend: RedisBackend) -> None:
    await backend.set(KEY, "value", ttl_s=0.05)

    await asyncio.sleep(0.2)

    assert await backend.get(KEY) is None


async def test_lock_is_taken_once(
    backend: RedisBackend, raw_client: redis.asyncio.Redis, redis_namespace: str
) -> None:
    first = await backend.acquire_lock(KEY, ttl_s=360)
    second = await backend.acquire_lock(KEY, ttl_s=360)

    ttl_ms = await raw_client.pttl(f"{redis_namespace}:cache:lock:{KEY}")
    assert first is not None
    assert second is None
    assert 355_000 < ttl_ms <= 360_000


async def test_release_with_other_token_keeps_lock(backend: RedisBackend) -> None:
    token = await backend.acquire_lock(KEY, ttl_s=60)

    await backend.release_lock(KEY, "not-the-token")

    assert token is not None
    assert await backend.peek(KEY) == (None, True)


async def test_release_frees_lock(backend: RedisBackend) -> None:
    token = await backend.acquire_lock(KEY, ttl_s=60)
    assert token is not None

    await backend.release_lock(KEY, token)

    assert await backend.peek(KEY) == (None, False)
    assert await backend.acquire_lock(KEY, ttl_s=60) is not None


async def test_expired_lock_can_be_taken(backend: RedisBackend) -> None:
    await backend.acquire_lock(KEY, ttl_s=0.05)

    await asyncio.sleep(0.2)

    assert await backend.acquire_lock(KEY, ttl_s=60) is not None


async def test_peek_returns_entry_and_lock(backend: RedisBackend) -> None:
    await backend.acquire_lock(KEY, ttl_s=60)
    await backend.set(KEY, "value", ttl_s=60)

    assert await backend.peek(KEY) == ("value", True)


async def test_unreachable_server_is_unavailable(closed_redis_url: str) -> None:
    backend = RedisBackend.from_url(closed_redis_url, namespace="microtopic-test-closed")

    with pytest.raises(RedisUnavailableError) as raised:
        await backend.get(KEY)
    await backend.aclose()

    message = raised.value.message
    assert raised.value.backend == describe_redis_url(closed_redis_url)
    assert "could not be reached" in message
    assert "closed-port-password" not in message
    assert "Check `redis_url`" in message


@pytest.mark.parametrize(
    ("url", "described"),
    [
        ("redis://:hunter2@cache.example:6380/1", "Redis at cache.example:6380"),
        ("rediss://user:hunter2@cache.example/0", "Redis at cache.example:6379"),
        ("unix:///run/redis.sock?password=hunter2", "Redis at /run/redis.sock"),
    ],
)
def test_description_hides_password(url: str, described: str) -> None:
    assert describe_redis_url(url) == described
