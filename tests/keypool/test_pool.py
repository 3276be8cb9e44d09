"""Round-robin selection, concurrency limits and disabling in the key pool."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest

from microtopic.config import KeyConfig, ProviderKind
from microtopic.errors import NoKeyAvailableError, NotFoundError, ServiceAtCapacityError
from microtopic.keypool import KeyPool, PooledKey
from microtopic.providers.base import ChatRequest, ChatResult


class UnusedProvider:
    """A provider for pooled keys that fails if called, because the pool only hands keys out."""

    async def complete(self, request: ChatRequest, *, timeout_s: float) -> ChatResult:
        raise AssertionError("the key pool must not call its providers")

    async def aclose(self) -> None:
        return None


def make_pool(*names: str, max_concurrency: int | None = None) -> KeyPool:
    keys = [
        PooledKey(
            config=KeyConfig(
                name=name, provider=ProviderKind.LOCAL, max_concurrency=max_concurrency
            ),
            provider=UnusedProvider(),
        )
        for name in names
    ]
    return KeyPool(keys)


async def test_round_robin_is_even() -> None:
    pool = make_pool("east", "west", "north")

    chosen = []
    for _ in range(300):
        key = await pool.acquire(avoid=None, timeout_s=1.0)
        chosen.append(key.name)
        await pool.release(key)

    assert chosen[:6] == ["east", "west", "north", "east", "west", "north"]
    assert Counter(chosen) == {"east": 100, "west": 100, "north": 100}
    assert [key.usage_count for key in pool.keys] == [100, 100, 100]
    assert [key.active_calls for key in pool.keys] == [0, 0, 0]


async def test_acquire_records_use() -> None:
    pool = make_pool("east")

    key = await pool.acquire(avoid=None, timeout_s=1.0)

    assert key.active_calls == 1
    assert key.usage_count == 1
    assert key.last_used is not None


async def test_avoided_key_is_skipped() -> None:
    pool = make_pool("east", "west")

    key = await pool.acquire(avoid="east", timeout_s=1.0)

    assert key.name == "west"


async def test_avoided_key_is_fallback() -> None:
    pool = make_pool("east", "west")
    pool.record_failure(pool.get("west"), "the key was rejected (401)", disable=True)

    key = await pool.acquire(avoid="east", timeout_s=1.0)

    assert key.name == "east"


async def test_avoided_busy_alternative_falls_back() -> None:
    pool = make_pool("east", "west", max_concurrency=1)
    west = await pool.acquire(avoid="east", timeout_s=1.0)

    east = await pool.acquire(avoid="east", timeout_s=1.0)

    assert west.name == "west"
    assert east.name == "east"


async def test_full_key_waits_for_release() -> None:
    pool = make_pool("east", max_concurrency=1)
    busy_key = await pool.acquire(avoid=None, timeout_s=1.0)

    waiting = asyncio.create_task(pool.acquire(avoid=None, timeout_s=5.0))
    await asyncio.sleep(0.05)
    still_waiting = not waiting.done()
    await pool.release(busy_key)
    key = await asyncio.wait_for(waiting, timeout=1.0)

    assert still_waiting
    assert key.name == "east"
    assert key.active_calls == 1


async def test_concurrency_limit_is_never_exceeded() -> None:
    pool = make_pool("east", "west", max_concurrency=2)
    in_flight: Counter[str] = Counter()
    peaks: Counter[str] = Counter()

    async def call() -> None:
        key = await pool.acquire(avoid=None, timeout_s=5.0)
        in_flight[key.name] += 1
        peaks[key.name] = max(peaks[key.name], in_flight[key.name])
        await asyncio.sleep(0.01)
        in_flight[key.name] -= 1
        await pool.release(key)

    async with asyncio.TaskGroup() as group:
        for _ in range(20):
            group.create_task(call())

    assert peaks == {"east": 2, "west": 2}


async def test_full_pool_times_out_at_capacity() -> None:
    pool = make_pool("east", "west", max_concurrency=1)
    await pool.acquire(avoid=None, timeout_s=1.0)
    await pool.acquire(avoid=None, timeout_s=1.0)

    with pytest.raises(ServiceAtCapacityError) as caught:
        await pool.acquire(avoid=None, timeout_s=0.05)

    assert caught.value.max_concurrent_requests == 2
    assert caught.value.retry_after_s == 0.05
    assert "maximum capacity" in caught.value.message


async def test_all_disabled_raises_at_once() -> None:
    pool = make_pool("east", "west")
    for key in pool.keys:
        pool.record_failure(key, "the key was rejected (401)", disable=True)

    with pytest.raises(NoKeyAvailableError) as caught:
        async with asyncio.timeout(1.0):
            await pool.acquire(avoid=None, timeout_s=30.0)

    assert caught.value.key_count == 2
    assert caught.value.inactive_count == 2
    assert "all 2 keys are disabled" in caught.value.message
    assert "re-enable" in caught.value.message


async def test_waiting_acquire_sees_last_key_disabled() -> None:
    pool = make_pool("east", max_concurrency=1)
    busy_key = await pool.acquire(avoid=None, timeout_s=1.0)
    waiting = asyncio.create_task(pool.acquire(avoid=None, timeout_s=5.0))
    await asyncio.sleep(0.01)

    pool.record_failure(busy_key, "the key was rejected (401)", disable=True)
    await pool.release(busy_key)

    with pytest.raises(NoKeyAvailableError):
        await asyncio.wait_for(waiting, timeout=1.0)


async def test_enable_restores_rotation() -> None:
    pool = make_pool("east", "west")
    for key in pool.keys:
        pool.record_failure(key, "the key was rejected (401)", disable=True)

    enabled = pool.enable("west")
    key = await pool.acquire(avoid=None, timeout_s=1.0)

    assert key is enabled
    assert key.is_active
    assert key.disabled_reason is None
    assert not pool.get("east").is_active


def test_failure_without_disable_keeps_key() -> None:
    pool = make_pool("east")
    key = pool.get("east")

    pool.record_failure(key, "rate limited (429)", disable=False)

    assert key.is_active
    assert key.error_count == 1
    assert key.last_error == "rate limited (429)"
    assert key.disabled_reason is None


def test_disable_records_reason() -> None:
    pool = make_pool("east")
    key = pool.get("east")

    pool.record_failure(key, "the key was rejected (401)", disable=True)

    assert not key.is_active
    assert key.error_count == 1
    assert key.disabled_reason == "the key was rejected (401)"


def test_unknown_name_raises_not_found() -> None:
    pool = make_pool("east")

    with pytest.raises(NotFoundError) as caught:
        pool.get("south")

    assert "'south'" in caught.value.message


def test_enable_unknown_name_raises_not_found() -> None:
    pool = make_pool("east")

    with pytest.raises(NotFoundError):
        pool.enable("south")


def test_empty_pool_is_rejected() -> None:
    with pytest.raises(ValueError, match="at least one key"):
        KeyPool([])
