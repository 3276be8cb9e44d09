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
from microtopic.storage import (
    Database,
    ForwardedCall,
    GenerationStore,
    PassthroughStore,
    RequestKind,
    TraceStore,
    upgrade_database,
)
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
HEAD_REVISION = "0005"


# Rows as revisions 0001 to 0004 stored them, written without the current models.
INSERT_REQUEST = text(
    "INSERT INTO generation_requests (id, course_id, subject_name, topic_name, input, status, "
    "created_at) VALUES (:id, 'physics-101', 'Mechanics', 'Newton''s laws', '{}', 'running', "
    ":created_at)"
)
INSERT_CALL = text(
    "INSERT INTO llm_calls (request_id, step, key_name, deployment, attempt, latency_ms, "
    "prompt_tokens, completion_tokens, outcome, started_at, span_id, parent_id) "
    "VALUES (:request_id, 'plan', 'east', 'gpt-4o-mini', 1, 812.5, 420, 96, 'success', "
    ":started_at, 2, 1)"
)
INSERT_SPAN = text(
    "INSERT INTO trace_spans (request_id, span_id, parent_id, name, kind, started_at, "
    "finished_at, attributes) VALUES (:request_id, 3, NULL, 'store request', 'storage', "
    ":started_at, :started_at, '{}')"
)


def table_names(connection: Connection) -> set[str]:
    return set(inspect(connection).get_table_names())


def upgrade_to(connection: Connection, revision: str) -> None:
    config = alembic_config()
    config.attributes["connection"] = connection
    command.upgrade(config, revision)


def downgrade_to(connection: Connection, revision: str) -> None:
    config = alembic_config()
    config.attributes["connection"] = connection
    command.downgrade(config, revision)


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
        await connection.execute(INSERT_REQUEST, {"id": "a" * 32, "created_at": T0})

    await empty_database.upgrade()

    stored = await GenerationStore(empty_database).get_request("a" * 32)
    assert stored.created_at == T0
    assert stored.topic_name == "Newton's laws"
    async with empty_database.engine.connect() as connection:
        tables = await connection.run_sync(table_names)
    assert tables == EXPECTED_TABLES
    assert await read_revision(empty_database) == HEAD_REVISION


async def test_upgrade_from_0004_keeps_requests_with_traces(empty_database: Database) -> None:
    async with empty_database.engine.begin() as connection:
        await connection.run_sync(upgrade_to, "0004")
        await connection.execute(INSERT_REQUEST, {"id": "b" * 32, "created_at": T0})
        await connection.execute(INSERT_CALL, {"request_id": "b" * 32, "started_at": T0})
        await connection.execute(INSERT_SPAN, {"request_id": "b" * 32, "started_at": T0})

    await empty_database.upgrade()

    trace = await TraceStore(empty_database).get_trace("b" * 32, not_before=T0)
    assert trace.request.kind == RequestKind.GENERATION
    assert trace.request.topic_name == "Newton's laws"
    assert trace.request.keys == ["east"]
    assert [span.name for span in trace.spans] == ["attempt 1 on east", "store request"]
    assert await read_revision(empty_database) == HEAD_REVISION


async def test_upgraded_database_takes_forwarded_call(empty_database: Database) -> None:
    async with empty_database.engine.begin() as connection:
        await connection.run_sync(upgrade_to, "0004")
        await connection.execute(INSERT_REQUEST, {"id": "c" * 32, "created_at": T0})
    await empty_database.upgrade()
    forwarded = ForwardedCall(
        request_id="d" * 32,
        requested_model="gpt-4o-mini",
        max_tokens=60,
        message_count=2,
        created_at=T0,
        finished_at=T0,
    )

    await PassthroughStore(empty_database).add(forwarded, steps=[], calls=[])

    trace = await TraceStore(empty_database).get_trace("d" * 32, not_before=T0)
    assert trace.request.kind == RequestKind.PASSTHROUGH
    assert trace.request.topic_name is None
    assert trace.request.requested_model == "gpt-4o-mini"


async def test_downgrade_to_0004_drops_forwarded_calls(empty_database: Database) -> None:
    await empty_database.upgrade()
    store = GenerationStore(empty_database)
    await store.start_request("e" * 32, make_request(), created_at=T0)
    forwarded = ForwardedCall(
        request_id="f" * 32,
        requested_model=None,
        max_tokens=None,
        message_count=1,
        created_at=T0,
        finished_at=T0,
    )
    await PassthroughStore(empty_database).add(forwarded, steps=[], calls=[])

    async with empty_database.engine.begin() as connection:
        await connection.run_sync(downgrade_to, "0004")
        ids = (await connection.execute(text("SELECT id FROM generation_requests"))).all()

    assert [row[0] for row in ids] == ["e" * 32]


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
