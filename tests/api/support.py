"""Paths, request bodies and helpers shared by the HTTP API tests."""

from __future__ import annotations

import sqlite3
import uuid
from contextlib import closing
from pathlib import Path
from typing import Any

import httpx

from microtopic.api.routes import PREFIX
from microtopic.config import GatewayConfig, RetryConfig, RetryStrategy

GENERATE_PATH = f"{PREFIX}/generate-async"
STATS_PATH = f"{PREFIX}/service-stats"
DASHBOARD_PATH = f"{PREFIX}/debug/dashboard"
CHECK_PATH = f"{PREFIX}/keys/check"

KEY_NAMES = ("east", "west", "north")
DEPLOYMENT = "gpt-4o-mini"
API_VERSION = "2024-10-21"

# The default retry counts, with delays short enough for tests.
FAST_GATEWAY = GatewayConfig(
    retry=RetryConfig(
        first_request=RetryStrategy(retries=2, delay_s=0.01),
        retry_request=RetryStrategy(retries=3, delay_s=0.01),
    )
)

# The body that the existing client of this API sends.
CLIENT_BODY = {"course_id": "test", "subject_name": "Math", "topic_name": "Algebra"}


def new_secret() -> str:
    """Return a made-up key secret, 40 characters long, that no other test uses."""
    return "sk-test-" + uuid.uuid4().hex


def enable_path(key_name: str) -> str:
    return f"{PREFIX}/keys/{key_name}/enable"


def table_rows(database_path: Path) -> dict[str, list[tuple[Any, ...]]]:
    """Return every row of every table in the SQLite file, by table name."""
    with closing(sqlite3.connect(database_path)) as connection:
        names = [
            row[0]
            for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        ]
        return {name: connection.execute(f'SELECT * FROM "{name}"').fetchall() for name in names}


def count_rows(database_path: Path, table: str) -> int:
    """Return the number of rows in `table`."""
    with closing(sqlite3.connect(database_path)) as connection:
        (count,) = connection.execute(f'SELECT COUNT(*) FROM "{table}"').fetchone()
        return int(count)


def request_row(database_path: Path, request_id: str) -> dict[str, Any] | None:
    """Return the `generation_requests` row of `request_id` as a dict, or None."""
    with closing(sqlite3.connect(database_path)) as connection:
        connection.row_factory = sqlite3.Row
        row = connection.execute(
            "SELECT * FROM generation_requests WHERE id = ?", (request_id,)
        ).fetchone()
        return None if row is None else dict(row)


class SimulatorControl:
    """The simulator's control API: inject faults into a key and read the call counts."""

    def __init__(self, base_url: str) -> None:
        self._client = httpx.AsyncClient(base_url=base_url)

    async def set_fault(self, key_name: str, kind: str, **fields: Any) -> None:
        """Make the next calls with `key_name` fail. A `count` field limits how many."""
        response = await self._client.put(
            f"/_simulator/keys/{key_name}/fault", json={"kind": kind, **fields}
        )
        response.raise_for_status()

    async def stats(self) -> dict[str, Any]:
        response = await self._client.get("/_simulator/stats")
        response.raise_for_status()
        stats: dict[str, Any] = response.json()
        return stats

    async def aclose(self) -> None:
        await self._client.aclose()
