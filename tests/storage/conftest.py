"""Databases for the storage tests: a new SQLite file, and a fresh PostgreSQL schema.

The PostgreSQL cases run against MICROTOPIC_TEST_POSTGRES_URL, by default the
local server's `test` database, each in a schema of its own that is dropped
afterwards. When that server cannot be reached they are skipped, with the reason
in the summary, except under CI=true, where they fail.
"""

from __future__ import annotations

import asyncio
import os
import threading
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, text

from microtopic.errors import StorageError
from microtopic.storage import Database, GenerationStore
from microtopic.storage.errors import storage_errors

POSTGRES_URL = os.environ.get(
    "MICROTOPIC_TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
)


def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'microtopic.db'}"


async def dispose_sqlite(database: Database) -> None:
    """Close the pool, then let aiosqlite's worker threads hand back their last results.

    A worker that finishes after the test's event loop has closed raises in its
    thread ("Event loop is closed"), which pytest reports as an error.
    """
    await database.dispose()
    for _ in range(500):  # at most 5 s
        if not any("_connection_worker_thread" in t.name for t in threading.enumerate()):
            return
        await asyncio.sleep(0.01)


@pytest.fixture
async def sqlite_database(tmp_path: Path) -> AsyncIterator[Database]:
    """A new SQLite file, not yet upgraded."""
    database = Database(sqlite_url(tmp_path))
    yield database
    await dispose_sqlite(database)


@pytest.fixture(params=["sqlite", "postgresql"])
async def empty_database(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    """An empty database of each kind, not yet upgraded."""
    if request.param == "sqlite":
        database = Database(sqlite_url(tmp_path))
        yield database
        await dispose_sqlite(database)
        return

    schema = f"microtopic_test_{uuid.uuid4().hex[:12]}"
    admin = Database(POSTGRES_URL)
    try:
        await _execute(admin, f'CREATE SCHEMA "{schema}"')
    except StorageError as exc:
        await admin.dispose()
        reason = f"PostgreSQL at {admin.display_url} is not available: {exc}"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason}. CI must run it: scripts/services.sh starts it.")
        pytest.skip(reason)

    database = Database(POSTGRES_URL)
    event.listen(database.engine.sync_engine, "connect", _search_path_setter(schema))
    yield database
    await database.dispose()
    await _execute(admin, f'DROP SCHEMA "{schema}" CASCADE')
    await admin.dispose()


@pytest.fixture
async def database(empty_database: Database) -> Database:
    """An upgraded database of each kind."""
    await empty_database.upgrade()
    return empty_database


@pytest.fixture
def store(database: Database) -> GenerationStore:
    return GenerationStore(database)


async def _execute(database: Database, statement: str) -> None:
    with storage_errors(database.url, "prepare the test schema"):
        async with database.engine.begin() as connection:
            await connection.execute(text(statement))


def _search_path_setter(schema: str) -> Callable[[Any, Any], None]:
    def set_search_path(dbapi_connection: Any, connection_record: Any) -> None:
        # Runs on the raw asyncpg connection, outside any transaction, so the
        # setting lasts for the life of the connection.
        dbapi_connection.run_async(
            lambda connection: connection.execute(f'SET search_path TO "{schema}"')
        )

    return set_search_path
