"""The key table printed by `microtopic keys`."""

from __future__ import annotations

from typing import Any

import httpx
from rich.table import Table

from microtopic.api.schemas import mask_secret
from microtopic.config import Settings
from microtopic.errors import MicrotopicError
from microtopic.storage import Database, GenerationStore

STATS_PATH = "/api/v1/microtopic-content/service-stats"


async def key_table(settings: Settings, server: str | None) -> Table:
    """Return the table of configured keys with counts from `server` or the database.

    Only a running service tracks each key's state, so without `server` it shows as "-".
    """
    if server:
        counts = await _counts_from_server(server)
        source = f"live counts from {server}"
    else:
        counts = await _counts_from_database(settings.database_url)
        source = "counts from stored LLM calls"

    table = Table(title=f"Keys ({source})")
    for column in (
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
    ):
        table.add_column(column, justify="right" if column in ("usage", "errors") else "left")
    for key in settings.effective_keys():
        row = counts.get(key.name, {})
        secret = key.secret.get_secret_value() if key.secret else None
        table.add_row(
            key.name,
            str(key.provider),
            key.model_label,
            key.endpoint_host,
            mask_secret(secret),
            _active_label(row),
            str(row.get("usage_count", 0)),
            str(row.get("error_count", 0)),
            str(row.get("last_used") or "-"),
            str(row.get("state", "-")),
        )
    return table


def _active_label(row: dict[str, Any]) -> str:
    if "is_active" not in row:
        return "?"
    return "yes" if row["is_active"] else "no"


async def _counts_from_database(url: str) -> dict[str, dict[str, Any]]:
    database = Database(url)
    try:
        await database.upgrade()
        usage = await GenerationStore(database).key_usage()
    finally:
        await database.dispose()
    return {
        item.key_name: {
            "usage_count": item.usage_count,
            "error_count": item.error_count,
            "last_used": item.last_used.isoformat(timespec="seconds") if item.last_used else None,
        }
        for item in usage
    }


async def _counts_from_server(server: str) -> dict[str, dict[str, Any]]:
    url = server.rstrip("/") + STATS_PATH
    try:
        async with httpx.AsyncClient(timeout=10.0) as client:
            response = await client.get(url)
            response.raise_for_status()
    except httpx.HTTPError as exc:
        raise MicrotopicError(
            f"Could not read {url} ({type(exc).__name__}). Is `microtopic serve` running there?"
        ) from exc
    return {key["name"]: key for key in response.json()["keys"]}
