"""Alembic's environment for Microtopic's migrations.

`Database.upgrade` passes its own connection in `config.attributes["connection"]`,
and the migrations run on it, inside its transaction. Run from the alembic command
line, this script connects to MICROTOPIC_DATABASE_URL, or to the default SQLite
file when that is unset; with `--sql` it prints the SQL instead.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any, Literal

from alembic import context
from alembic.autogenerate.api import AutogenContext
from sqlalchemy.engine import Connection

from microtopic.config import DATABASE_URL_ENV_VAR, DEFAULT_DATABASE_URL
from microtopic.storage.database import Database
from microtopic.storage.models import Base, UtcDateTime


def _render_item(kind: str, item: Any, autogen_context: AutogenContext) -> str | Literal[False]:
    # Migrations use plain SQLAlchemy types, so that editing the models later
    # cannot change what an old migration creates.
    if kind == "type" and isinstance(item, UtcDateTime):
        return "sa.DateTime(timezone=True)"
    return False


def _run_on_connection(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_item=_render_item,
        # SQLite cannot alter most constraints in place; batch mode rebuilds the table.
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


async def _run_on_url(url: str) -> None:
    database = Database(url)
    try:
        async with database.engine.begin() as connection:
            await connection.run_sync(_run_on_connection)
    finally:
        await database.dispose()


def _print_sql(url: str) -> None:
    context.configure(
        url=url,
        target_metadata=Base.metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
    )
    with context.begin_transaction():
        context.run_migrations()


def _run() -> None:
    connection = context.config.attributes.get("connection")
    if connection is not None:
        _run_on_connection(connection)
        return

    url = os.environ.get(DATABASE_URL_ENV_VAR) or DEFAULT_DATABASE_URL
    if context.is_offline_mode():
        _print_sql(url)
    else:
        asyncio.run(_run_on_url(url))


_run()
