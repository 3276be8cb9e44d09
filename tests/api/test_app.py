"""The whole app under uvicorn: its lifespan, and the secrets it must never reveal."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import httpx
import pytest

from tests.api.support import (
    CLIENT_BODY,
    DASHBOARD_PATH,
    GENERATE_PATH,
    KEY_NAMES,
    STATS_PATH,
    SimulatorControl,
    enable_path,
    table_rows,
)

FORMATTER = logging.Formatter("%(name)s %(levelname)s %(message)s")


@pytest.fixture
def debug_logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """Every logger at debug level from before the app starts, so request it first."""
    caplog.set_level(logging.DEBUG)
    return caplog


def secret_fragments(secrets: dict[str, str]) -> list[str]:
    # The full secret, and its random part without the "sk-test-" prefix.
    return [fragment for secret in secrets.values() for fragment in (secret, secret[8:])]


async def test_startup_creates_database_tables(
    client: httpx.AsyncClient, database_path: Path
) -> None:
    response = await client.get("/healthz")

    assert response.status_code == 200
    tables = set(table_rows(database_path))
    assert {"generation_requests", "generated_topics", "llm_calls"} <= tables


async def test_secrets_never_leave_the_app(
    debug_logs: pytest.LogCaptureFixture,
    client: httpx.AsyncClient,
    simulator_control: SimulatorControl,
    received: list[httpx.Response],
    key_secrets: dict[str, str],
    database_path: Path,
) -> None:
    await simulator_control.set_fault("west", "revoked")

    generations = await asyncio.gather(
        *(client.post(GENERATE_PATH, json=CLIENT_BODY) for _ in range(12))
    )
    stats = await client.get(STATS_PATH)
    await client.get(DASHBOARD_PATH)
    enabled = await client.post(enable_path("west"))
    unknown = await client.post(enable_path("south"))
    await client.post(GENERATE_PATH, json={**CLIENT_BODY, "topic_name": ""})
    for name in KEY_NAMES:
        await simulator_control.set_fault(name, "revoked")
    all_failed = await client.post(GENERATE_PATH, json=CLIENT_BODY)
    none_left = await client.post(GENERATE_PATH, json=CLIENT_BODY)

    assert [response.status_code for response in generations] == [200] * 12
    west = next(key for key in stats.json()["keys"] if key["name"] == "west")
    assert west["is_active"] is False
    assert west["error_count"] >= 1
    assert enabled.json()["is_active"] is True
    assert unknown.status_code == 404
    assert unknown.json()["error"]["code"] == "not_found"
    assert all_failed.status_code == 502
    assert none_left.status_code == 503

    fragments = secret_fragments(key_secrets)
    assert len(received) == 19
    for response in received:
        headers = "\n".join(f"{name}: {value}" for name, value in response.headers.multi_items())
        for fragment in fragments:
            assert fragment not in response.text, response.url
            assert fragment not in headers, response.url

    records = debug_logs.get_records("setup") + debug_logs.get_records("call")
    assert any(record.levelno == logging.DEBUG for record in records)
    assert any(record.name == "microtopic.runtime" for record in records)
    assert any(record.name.startswith("openai") for record in records)
    for record in records:
        text = FORMATTER.format(record) + repr(record.args)
        for fragment in fragments:
            assert fragment not in text, record.name

    rows = table_rows(database_path)
    assert rows["llm_calls"]
    for table, contents in rows.items():
        for row in contents:
            text = " ".join(str(value) for value in row)
            for fragment in fragments:
                assert fragment not in text, table
