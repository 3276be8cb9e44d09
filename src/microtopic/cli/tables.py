"""The key table printed by `microtopic keys`."""

from __future__ import annotations

from dataclasses import dataclass, replace

from rich.markup import escape
from rich.table import Table

from microtopic.api.schemas import ServiceStatsResponse, mask_secret
from microtopic.cli.remote import call_service, describe_server
from microtopic.config import KeyConfig, Settings
from microtopic.storage import Database, GenerationStore, KeyUsage

STATS_PATH = "/api/v1/microtopic-content/service-stats"

COLUMNS = (
    "name",
    "provider",
    "deployment",
    "endpoint",
    "secret",
    "active",
    "usage",
    "errors",
    "last used",
    "state",
)


@dataclass(frozen=True)
class KeyRow:
    """One row of the table: a key's description and its counts, as printed."""

    name: str
    provider: str
    deployment: str
    endpoint: str
    secret: str
    active: str = "?"
    usage: int = 0
    errors: int = 0
    last_used: str = "-"
    state: str = "-"


async def key_table(settings: Settings, server: str | None) -> Table:
    """Return the table of keys: the service's at `server`, or else the configured ones.

    With `server`, the rows are the keys of that running service, with their live
    state, whatever the local config contains. Without it, they are the configured keys
    with counts from the database, and each key's state shows as "-", because only
    a running service tracks it.
    """
    if server:
        rows = await _rows_from_server(server)
        source = f"live counts from {describe_server(server)}"
    else:
        rows = await _rows_from_database(settings)
        source = "counts from stored LLM calls"

    table = Table(title=escape(f"Keys ({source})"))
    for column in COLUMNS:
        table.add_column(column, justify="right" if column in ("usage", "errors") else "left")
    for row in rows:
        table.add_row(
            escape(row.name),
            escape(row.provider),
            escape(row.deployment),
            escape(row.endpoint),
            escape(row.secret),
            row.active,
            str(row.usage),
            str(row.errors),
            row.last_used,
            escape(row.state),
        )
    return table


async def _rows_from_database(settings: Settings) -> list[KeyRow]:
    database = Database(settings.database_url, setting=settings.database_url_setting)
    try:
        await database.upgrade()
        usage = await GenerationStore(database).key_usage()
    finally:
        await database.dispose()
    usage_by_key = {item.key_name: item for item in usage}
    return [_configured_row(key, usage_by_key.get(key.name)) for key in settings.effective_keys()]


def _configured_row(key: KeyConfig, usage: KeyUsage | None) -> KeyRow:
    secret = key.secret.get_secret_value() if key.secret else None
    row = KeyRow(
        name=key.name,
        provider=str(key.provider),
        deployment=key.model_label,
        endpoint=key.endpoint_host,
        secret=mask_secret(secret),
    )
    if usage is None:
        return row
    last_used = usage.last_used.isoformat(timespec="seconds") if usage.last_used else "-"
    return replace(row, usage=usage.usage_count, errors=usage.error_count, last_used=last_used)


async def _rows_from_server(server: str) -> list[KeyRow]:
    stats = await call_service("GET", server, STATS_PATH, ServiceStatsResponse, timeout_s=10.0)
    return [
        KeyRow(
            name=key.name,
            provider=key.provider,
            deployment=key.deployment,
            endpoint=key.endpoint_host,
            secret=key.masked_secret,
            active="yes" if key.is_active else "no",
            usage=key.usage_count,
            errors=key.error_count,
            last_used=key.last_used.isoformat(timespec="seconds") if key.last_used else "-",
            state=key.state,
        )
        for key in stats.keys
    ]
