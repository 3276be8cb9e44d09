"""Fixtures shared across the test tree."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator

import pytest
import redis
import redis.asyncio
from sqlalchemy import make_url, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import create_async_engine

from tests.harness import SimulatorHarness


@pytest.fixture
async def azure_simulator() -> AsyncIterator[SimulatorHarness]:
    """A fresh simulator with the keys `east`, `west` and `north`, stopped after the test."""
    async with SimulatorHarness.start() as harness:
        yield harness


REDIS_URL = os.environ.get("MICROTOPIC_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture
async def redis_url() -> str:
    """The test Redis server's URL, once it responds to a ping.

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


POSTGRES_ADMIN_URL = os.environ.get(
    "MICROTOPIC_TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
)


@pytest.fixture
async def postgres_database_url() -> AsyncIterator[str]:
    """The URL of a new, empty PostgreSQL database, dropped after the test.

    For tests whose processes each connect on their own; a test in one process
    can use the storage tests' `database` fixture instead.
    """
    name = f"microtopic_test_{uuid.uuid4().hex[:12]}"
    admin = create_async_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        async with admin.connect() as connection:
            await connection.execute(text(f'CREATE DATABASE "{name}"'))
    except (OSError, SQLAlchemyError) as exc:
        await admin.dispose()
        reason = f"PostgreSQL at {make_url(POSTGRES_ADMIN_URL).host} is not available ({exc})"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason}. CI must run it: scripts/services.sh starts it.")
        pytest.skip(reason)

    yield make_url(POSTGRES_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    async with admin.connect() as connection:
        await connection.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
    await admin.dispose()
