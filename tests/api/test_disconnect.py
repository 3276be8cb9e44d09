"""A generation whose HTTP client disconnects is cancelled, upstream calls included."""

from __future__ import annotations

import asyncio
import sqlite3
from contextlib import closing
from pathlib import Path

import httpx
import pytest

from tests.api.support import CLIENT_BODY, GENERATE_PATH, KEY_NAMES, SimulatorControl
from tests.app_server import AppServer


async def test_client_disconnect_cancels_generation(
    app_server: AppServer, simulator_control: SimulatorControl, database_path: Path
) -> None:
    for name in KEY_NAMES:
        await simulator_control.set_fault(name, "hang")

    async with httpx.AsyncClient(base_url=app_server.base_url, timeout=1.0) as http:
        with pytest.raises(httpx.ReadTimeout):
            await http.post(GENERATE_PATH, json=CLIENT_BODY, headers={"X-Request-ID": "gone-1"})
    disconnects = 0
    for _ in range(100):
        stats = await simulator_control.stats()
        disconnects = stats["total"]["interrupted"]["client_disconnect"]
        if disconnects and _stored_error(database_path, "gone-1") is not None:
            break
        await asyncio.sleep(0.05)

    assert disconnects == 1  # the planner's call, cancelled at the simulator
    assert _stored_error(database_path, "gone-1") == ("failed", "cancelled")


def _stored_error(database_path: Path, request_id: str) -> tuple[str, str] | None:
    with closing(sqlite3.connect(database_path)) as connection:
        row = connection.execute(
            "SELECT status, error_code FROM generation_requests WHERE id = ?", (request_id,)
        ).fetchone()
    if row is None or row[0] == "running":
        return None
    return (row[0], row[1])
