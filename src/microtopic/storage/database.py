"""The database: one async engine, the sessions the store opens on it, and schema upgrades.

Any URL SQLAlchemy supports with an async driver works; the code is tested on
SQLite (aiosqlite) and PostgreSQL (asyncpg). A URL that names no driver, such as
`sqlite:///x.db` or `postgresql://host/db`, gets one of those two.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from alembic import command
from alembic.config import Config
from alembic.util import CommandError
from sqlalchemy import event, text
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, SQLAlchemyError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from microtopic.config import DATABASE_URL_SETTING
from microtopic.errors import ConfigError, StorageError
from microtopic.storage.errors import translate_connection_error

logger = logging.getLogger(__name__)

# The PostgreSQL advisory lock that serialises schema upgrades ("mtopic" in ASCII).
UPGRADE_LOCK_KEY = 0x6D746F706963

MIGRATIONS_DIR = Path(__file__).parent / "migrations"

SQLITE_BUSY_TIMEOUT_S = 30.0
"""How long an SQLite connection waits for another writer's lock before it fails."""

_DEFAULT_ASYNC_DRIVERS = {"sqlite": "sqlite+aiosqlite", "postgresql": "postgresql+asyncpg"}
_EXAMPLE_URL = "sqlite+aiosqlite:///./microtopic.db"
_EXAMPLE_POSTGRESQL_URL = "postgresql+asyncpg://user@127.0.0.1:5432/microtopic"


P = ParamSpec("P")
T = TypeVar("T")


def uninterruptible(
    operation: Callable[P, Coroutine[Any, Any, T]],
) -> Callable[P, Coroutine[Any, Any, T]]:
    """Make a store method run to its end even when its caller is cancelled.

    The method runs in a task of its own. A cancelled caller waits for that task to
    end, then raises the `CancelledError`; a second cancellation stops only the
    wait. Cancelling a statement half-way is unsafe with aiosqlite: the statement
    keeps running in its thread, and an `UPDATE ... RETURNING` cut off before its
    rows are fetched leaves a statement open. Closing the connection then leaves
    SQLite's write lock held until that statement is garbage collected, so every
    other writer waits out its busy timeout.
    """

    @functools.wraps(operation)
    async def run_to_end(*args: P.args, **kwargs: P.kwargs) -> T:
        task = asyncio.ensure_future(operation(*args, **kwargs))
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            if task.cancelled():
                raise
            await asyncio.wait({task})
            raise

    return run_to_end


class Database:
    """The engine and session factory for one database URL.

    Create one at start-up, share it, and call `dispose` at shutdown to close the
    pooled connections. `setting` names where the URL was set, such as
    "MICROTOPIC_DATABASE_URL", for the messages of the errors it raises.

    Raises `ConfigError` when the URL is invalid or names a dialect or driver that
    cannot be used.
    """

    def __init__(self, url: str, *, setting: str = DATABASE_URL_SETTING) -> None:
        self.setting = setting
        self.url = _parse_async_url(url, setting)
        self.display_url = self.url.render_as_string(hide_password=True)
        self.engine = _create_engine(self.url, setting)
        self._sessions = async_sessionmaker(self.engine, expire_on_commit=False)

    def __repr__(self) -> str:
        return f"Database({self.display_url!r})"

    def session(self) -> AsyncSession:
        """Return a new session, to be used as `async with database.session() as session`."""
        return self._sessions()

    async def upgrade(self) -> None:
        """Apply every migration the database lacks, in one transaction.

        A new database gets all tables, and an up-to-date one is left unchanged.
        Every command connects to the database through this method first, so it
        raises `ConfigError` when the server rejects the URL's database, user or
        password, and `StorageError` for any other failure.

        On PostgreSQL a transaction-scoped advisory lock makes processes that start
        at once upgrade one after the other; the later ones find the schema current.
        On SQLite the upgrade runs with foreign keys off, and checks them before it
        commits (see `_upgrade_sqlite`).
        """
        logger.info("Upgrading the database schema at %s", self.display_url)
        try:
            if self.url.get_backend_name() == "sqlite":
                await self._upgrade_sqlite()
            else:
                async with self.engine.begin() as connection:
                    await connection.execute(
                        text("SELECT pg_advisory_xact_lock(:key)"), {"key": UPGRADE_LOCK_KEY}
                    )
                    await connection.run_sync(_upgrade_to_head)
        except (SQLAlchemyError, OSError) as exc:
            raise translate_connection_error(
                exc, url=self.url, action="upgrade the database schema", setting=self.setting
            ) from exc
        except CommandError as exc:
            raise StorageError(
                f"Could not upgrade the database schema at {self.display_url}: Alembic could "
                "not plan the upgrade, usually because a newer version of Microtopic has "
                f"already upgraded this database. Run that version, or point {self.setting} "
                "at another database."
            ) from exc
        logger.info("The database schema at %s is up to date", self.display_url)

    async def _upgrade_sqlite(self) -> None:
        # SQLite alters a table by copying it and dropping the original, and with
        # foreign keys on, dropping a table that other rows reference fails even
        # inside a transaction. The pragma is a no-op inside a transaction, so it is
        # set before BEGIN, and the connection is discarded afterwards rather than
        # returned to the pool with foreign keys off.
        # (https://www.sqlite.org/lang_altertable.html#otheralter)
        async with self.engine.connect() as connection:
            try:
                await connection.run_sync(_disable_sqlite_foreign_keys)
                async with connection.begin():
                    await connection.run_sync(_upgrade_to_head)
                    await connection.run_sync(_check_sqlite_foreign_keys)
            finally:
                await connection.invalidate()

    async def dispose(self) -> None:
        """Close every pooled connection."""
        await self.engine.dispose()


def upgrade_database(url: str, *, setting: str = DATABASE_URL_SETTING) -> None:
    """Upgrade the schema of the database at `url` from synchronous code, such as the CLI."""
    asyncio.run(_upgrade_and_dispose(url, setting))


def alembic_config() -> Config:
    """Return the Alembic configuration of the migrations shipped in this package."""
    return Config(MIGRATIONS_DIR / "alembic.ini")


async def _upgrade_and_dispose(url: str, setting: str) -> None:
    database = Database(url, setting=setting)
    try:
        await database.upgrade()
    finally:
        await database.dispose()


def _upgrade_to_head(connection: Connection) -> None:
    config = alembic_config()
    # migrations/env.py runs the migrations on this connection, inside its transaction.
    config.attributes["connection"] = connection
    command.upgrade(config, "head")


def _disable_sqlite_foreign_keys(connection: Connection) -> None:
    # Through the driver's cursor, because SQLAlchemy's execute would emit BEGIN first.
    cursor = connection.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        cursor.execute("PRAGMA foreign_keys = OFF")
    finally:
        cursor.close()


def _check_sqlite_foreign_keys(connection: Connection) -> None:
    violations = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
    if violations:
        table, _, parent, _ = violations[0]
        raise StorageError(
            f"The schema upgrade left {len(violations)} rows whose foreign keys match no "
            f"row, the first in {table} (referencing {parent}), so it was rolled back. "
            "Report this as a bug, with the database file if you can."
        )


def _parse_async_url(url: str, setting: str) -> URL:
    try:
        parsed = make_url(url)
    except ArgumentError:
        # The text is not echoed because it may contain a password.
        raise ConfigError(
            f"The value of {setting} is not a valid SQLAlchemy URL. Set it to a URL such as "
            f"{_EXAMPLE_URL} or {_EXAMPLE_POSTGRESQL_URL}."
        ) from None
    if parsed.drivername in _DEFAULT_ASYNC_DRIVERS:
        parsed = parsed.set(drivername=_DEFAULT_ASYNC_DRIVERS[parsed.drivername])

    display_url = parsed.render_as_string(hide_password=True)
    try:
        dialect = parsed.get_dialect()
    except NoSuchModuleError:
        raise ConfigError(
            f"The database URL {display_url}, from {setting}, names the unknown dialect "
            f"{parsed.drivername!r}. Use sqlite+aiosqlite or postgresql+asyncpg, as in "
            f"{_EXAMPLE_URL} or {_EXAMPLE_POSTGRESQL_URL}."
        ) from None
    if not dialect.is_async:
        raise ConfigError(
            f"The database URL {display_url}, from {setting}, names the synchronous driver "
            f"{parsed.drivername!r}, but Microtopic needs an async one. Use sqlite+aiosqlite "
            f"or postgresql+asyncpg, as in {_EXAMPLE_URL} or {_EXAMPLE_POSTGRESQL_URL}."
        )
    return parsed


def _create_engine(url: URL, setting: str) -> AsyncEngine:
    display_url = url.render_as_string(hide_password=True)
    is_sqlite = url.get_backend_name() == "sqlite"
    try:
        if is_sqlite:
            engine = create_async_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_S})
        else:
            engine = create_async_engine(url, pool_pre_ping=True)
    except ImportError as exc:
        raise ConfigError(
            f"The database driver for {display_url}, from {setting}, is not installed "
            f"({exc.name}). Install it in the same environment as Microtopic, or use "
            "sqlite+aiosqlite or postgresql+asyncpg."
        ) from exc

    if is_sqlite:
        event.listen(engine.sync_engine, "connect", _prepare_sqlite_connection)
        event.listen(engine.sync_engine, "begin", _begin_sqlite_transaction)
    return engine


def _prepare_sqlite_connection(dbapi_connection: Any, connection_record: Any) -> None:
    # The sqlite3 module emits BEGIN itself, but only before INSERT, UPDATE and
    # DELETE, so SELECTs and DDL would run outside the transaction. Turning that
    # off and emitting BEGIN in `_begin_sqlite_transaction` makes both transactional
    # (the recipe in SQLAlchemy's SQLite dialect documentation).
    dbapi_connection.isolation_level = None

    cursor = dbapi_connection.cursor()
    try:
        # SQLite enforces foreign keys only when asked, once per connection.
        cursor.execute("PRAGMA foreign_keys = ON")
        # Write-ahead logging lets readers run while one writer commits. An
        # in-memory database keeps its "memory" journal, which is fine.
        cursor.execute("PRAGMA journal_mode = WAL")
    finally:
        cursor.close()


def _begin_sqlite_transaction(connection: Connection) -> None:
    connection.exec_driver_sql("BEGIN")
