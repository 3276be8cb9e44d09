from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import inspect, make_url, text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from microtopic.errors import ConfigError, StorageError
from microtopic.storage import Database, GenerationStore, upgrade_database
from microtopic.storage.database import alembic_config, uninterruptible
from microtopic.storage.models import LlmCallRow
from tests.storage.builders import T0, make_request
from tests.storage.conftest import dispose_sqlite

EXPECTED_TABLES = {
    "alembic_version",
    "generation_requests",
    "generated_topics",
    "llm_calls",
    "jobs",
    "job_items",
    "trace_spans",
}
HEAD_REVISION = "0004"


def table_names(connection: Connection) -> set[str]:
    return set(inspect(connection).get_table_names())


def upgrade_to(connection: Connection, revision: str) -> None:
    config = alembic_config()
    config.attributes["connection"] = connection
    command.upgrade(config, revision)


async def read_revision(database: Database) -> str | None:
    async with database.engine.connect() as connection:
        revision = await connection.scalar(text("SELECT version_num FROM alembic_version"))
    return None if revision is None else str(revision)


async def test_upgrade_creates_tables_in_new_database(empty_database: Database) -> None:
    await empty_database.upgrade()

    async with empty_database.engine.connect() as connection:
        tables = await connection.run_sync(table_names)
    assert tables == EXPECTED_TABLES
    assert await read_revision(empty_database) == HEAD_REVISION


async def test_second_upgrade_keeps_data(empty_database: Database) -> None:
    await empty_database.upgrade()
    store = GenerationStore(empty_database)
    await store.start_request("a" * 32, make_request(), created_at=T0)

    await empty_database.upgrade()

    stored = await store.get_request("a" * 32)
    assert stored.created_at == T0
    assert await read_revision(empty_database) == HEAD_REVISION


async def test_upgrade_from_first_revision_keeps_data(empty_database: Database) -> None:
    async with empty_database.engine.begin() as connection:
        await connection.run_sync(upgrade_to, "0001")
    await GenerationStore(empty_database).start_request("a" * 32, make_request(), created_at=T0)

    await empty_database.upgrade()

    stored = await GenerationStore(empty_database).get_request("a" * 32)
    assert stored.created_at == T0
    async with empty_database.engine.connect() as connection:
        tables = await connection.run_sync(table_names)
    assert tables == EXPECTED_TABLES
    assert await read_revision(empty_database) == HEAD_REVISION


def test_upgrade_database_helper_creates_tables(tmp_path: Path) -> None:
    path = tmp_path / "cli.db"

    upgrade_database(f"sqlite+aiosqlite:///{path}")

    with sqlite3.connect(path) as connection:
        rows = connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        tables = {name for (name,) in rows}
    connection.close()
    assert tables == EXPECTED_TABLES


async def test_upgrade_of_newer_database_explains(sqlite_database: Database) -> None:
    await sqlite_database.upgrade()
    async with sqlite_database.engine.begin() as connection:
        await connection.execute(text("UPDATE alembic_version SET version_num = '9999'"))

    with pytest.raises(StorageError) as raised:
        await sqlite_database.upgrade()

    assert "newer version of Microtopic" in raised.value.message
    assert sqlite_database.display_url in raised.value.message


async def test_upgrade_in_missing_directory_raises(tmp_path: Path) -> None:
    database = Database(f"sqlite+aiosqlite:///{tmp_path / 'absent' / 'microtopic.db'}")

    try:
        with pytest.raises(StorageError, match="could not be reached"):
            await database.upgrade()
    finally:
        await dispose_sqlite(database)


async def test_sqlite_enforces_foreign_keys(sqlite_database: Database) -> None:
    await sqlite_database.upgrade()
    orphan = LlmCallRow(
        request_id="0" * 32,
        step="planner",
        key_name="east",
        deployment="gpt-4o-mini",
        attempt=1,
        latency_ms=1.0,
        prompt_tokens=0,
        completion_tokens=0,
        outcome="success",
        started_at=T0,
    )

    with pytest.raises(IntegrityError):
        async with sqlite_database.session() as session, session.begin():
            session.add(orphan)


async def test_sqlite_file_uses_wal_journal(sqlite_database: Database) -> None:
    async with sqlite_database.engine.connect() as connection:
        journal_mode = await connection.scalar(text("PRAGMA journal_mode"))

    assert journal_mode == "wal"


@pytest.mark.parametrize(
    ("url", "drivername"),
    [
        ("sqlite:///microtopic.db", "sqlite+aiosqlite"),
        ("postgresql://postgres@127.0.0.1/test", "postgresql+asyncpg"),
        ("postgresql+asyncpg://postgres@127.0.0.1/test", "postgresql+asyncpg"),
    ],
)
async def test_url_without_async_driver_gets_one(url: str, drivername: str) -> None:
    database = Database(url)

    await database.dispose()

    assert database.url.drivername == drivername


async def test_password_is_masked_for_display() -> None:
    database = Database("postgresql+asyncpg://writer:hunter2@127.0.0.1:5432/test")

    await database.dispose()

    assert "hunter2" not in database.display_url
    assert "writer:***@" in database.display_url
    assert "hunter2" not in repr(database)


def test_invalid_url_is_rejected_without_echo() -> None:
    with pytest.raises(ConfigError) as raised:
        Database("not a url, password hunter2", setting="MICROTOPIC_DATABASE_URL")

    assert "MICROTOPIC_DATABASE_URL is not a valid SQLAlchemy URL" in raised.value.message
    assert "hunter2" not in raised.value.message


def test_synchronous_driver_is_rejected() -> None:
    with pytest.raises(ConfigError, match="synchronous driver 'sqlite\\+pysqlite'"):
        Database("sqlite+pysqlite:///microtopic.db")


def test_unknown_dialect_is_rejected() -> None:
    with pytest.raises(ConfigError, match="unknown dialect 'nosuchdb'"):
        Database("nosuchdb://writer:hunter2@127.0.0.1/test")


def test_mysql_url_names_setting_without_password() -> None:
    with pytest.raises(ConfigError) as raised:
        Database("mysql://writer:hunter2@127.0.0.1/microtopic", setting="`database_url` in a.yaml")

    message = raised.value.message
    assert "from `database_url` in a.yaml" in message
    assert "synchronous driver 'mysql'" in message
    assert "hunter2" not in message


async def test_missing_postgresql_database_is_config_error(postgres_database_url: str) -> None:
    url = make_url(postgres_database_url)
    absent = url.set(database=f"{url.database}_absent", password="hunter2")
    database = Database(absent.render_as_string(hide_password=False), setting="SOME_SETTING")

    try:
        with pytest.raises(ConfigError) as raised:
            await database.upgrade()
    finally:
        await database.dispose()

    message = raised.value.message
    assert f"has no database named '{url.database}_absent'" in message
    assert "Create it on the server, or correct SOME_SETTING." in message
    assert "hunter2" not in message


async def test_uninterruptible_runs_to_end_when_cancelled() -> None:
    started = asyncio.Event()
    release = asyncio.Event()
    finished: list[str] = []

    @uninterruptible
    async def operation() -> str:
        started.set()
        await release.wait()
        finished.append("done")
        return "done"

    caller = asyncio.create_task(operation())
    await started.wait()
    caller.cancel()
    await asyncio.sleep(0.01)
    still_waiting = not caller.done()
    release.set()

    with pytest.raises(asyncio.CancelledError):
        await caller
    assert still_waiting
    assert finished == ["done"]


async def test_uninterruptible_returns_result() -> None:
    @uninterruptible
    async def operation(value: int) -> int:
        await asyncio.sleep(0)
        return value * 2

    assert await operation(21) == 42


async def test_concurrent_upgrades_of_one_database_succeed(postgres_database_url: str) -> None:
    databases = [Database(postgres_database_url) for _ in range(3)]
    try:
        await asyncio.gather(*(database.upgrade() for database in databases))

        revision = await read_revision(databases[0])
    finally:
        for database in databases:
            await database.dispose()

    assert revision == HEAD_REVISION
