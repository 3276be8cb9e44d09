"""Fixtures shared across the test tree."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator

import pytest
import redis
import redis.asyncio

from tests.harness import SimulatorHarness


@pytest.fixture
async def azure_simulator() -> AsyncIterator[SimulatorHarness]:
    """A fresh simulator with the keys `east`, `west` and `north`, stopped after the test."""
    async with SimulatorHarness.start() as harness:
        yield harness


REDIS_URL = os.environ.get("MICROTOPIC_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture
async def redis_url() -> str:
    """The test Redis server's URL, once it answers a ping.

    When it cannot be reached the test is skipped with the reason, except under
    CI=true, where it fails.
    """
    client = redis.asyncio.Redis.from_url(REDIS_URL)
    try:
        await client.ping()
    except redis.RedisError as exc:
        reason = f"Redis at {REDIS_URL} is not available ({type(exc).__name__})"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason}. CI must run it: scripts/services.sh starts it.")
        pytest.skip(f"{reason}; start it with `redis-server --port 6379`.")
    finally:
        await client.aclose()
    return REDIS_URL


@pytest.fixture
async def redis_namespace(redis_url: str) -> AsyncIterator[str]:
    """A Redis key prefix of this test's own; its keys are deleted afterwards."""
    namespace = f"microtopic-test-{uuid.uuid4().hex[:12]}"
    yield namespace
    client = redis.asyncio.Redis.from_url(redis_url)
    try:
        keys = [key async for key in client.scan_iter(match=f"{namespace}:*", count=1000)]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()
