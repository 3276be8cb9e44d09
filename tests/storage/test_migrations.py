from __future__ import annotations

from typing import Any

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect
from sqlalchemy.engine import Connection

from microtopic.storage import Database
from microtopic.storage.database import alembic_config
from microtopic.storage.models import Base


def compare_with_models(connection: Connection) -> list[Any]:
    context = MigrationContext.configure(connection)
    differences: list[Any] = compare_metadata(context, Base.metadata)
    return differences


def downgrade_to_base(connection: Connection) -> None:
    config = alembic_config()
    config.attributes["connection"] = connection
    command.downgrade(config, "base")


def table_names(connection: Connection) -> set[str]:
    return set(inspect(connection).get_table_names())


async def test_migrations_match_models(database: Database) -> None:
    async with database.engine.connect() as connection:
        differences = await connection.run_sync(compare_with_models)

    assert differences == []


def test_migrations_have_one_head() -> None:
    scripts = ScriptDirectory.from_config(alembic_config())

    heads = scripts.get_heads()

    assert len(heads) == 1


async def test_downgrade_to_base_drops_tables(database: Database) -> None:
    async with database.engine.begin() as connection:
        await connection.run_sync(downgrade_to_base)

    async with database.engine.connect() as connection:
        tables = await connection.run_sync(table_names)
    assert tables == {"alembic_version"}
