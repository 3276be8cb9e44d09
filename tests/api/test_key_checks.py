"""Key stats and on-demand health checks over HTTP, against the simulator."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import httpx

from tests.api.support import (
    CHECK_PATH,
    CLIENT_BODY,
    DASHBOARD_PATH,
    GENERATE_PATH,
    KEY_NAMES,
    STATS_PATH,
    SimulatorControl,
)


async def check_keys(client: httpx.AsyncClient) -> dict[str, dict[str, Any]]:
    response = await client.post(CHECK_PATH)
    assert response.status_code == 200, response.text
    return {key["name"]: key for key in response.json()["keys"]}


async def stats_by_name(client: httpx.AsyncClient) -> dict[str, dict[str, Any]]:
    response = await client.get(STATS_PATH)
    response.raise_for_status()
    return {key["name"]: key for key in response.json()["keys"]}


async def test_fresh_keys_stats_are_idle(client: httpx.AsyncClient) -> None:
    keys = await stats_by_name(client)

    for key in keys.values():
        assert key["state"] == "active"
        assert key["priority"] == 1
        assert key["cooldown_remaining_s"] == 0
        assert key["ready_in_s"] == 0
        assert key["exhausted_reason"] is None
        assert key["circuit_state"] == "closed"
        assert key["consecutive_failures"] == 0
        assert key["errors_by_class"] == {}
        assert key["last_health_check"] is None
        assert key["quota"] == {
            "requests_limit": None,
            "requests_used": None,
            "requests_remaining": None,
            "tokens_limit": None,
            "tokens_used": None,
            "tokens_remaining": None,
        }


async def test_rate_limited_key_shows_cooldown(
    client: httpx.AsyncClient, simulator_control: SimulatorControl
) -> None:
    await simulator_control.set_fault("east", "rate_limit", retry_after_s=30, count=1)

    generation = await client.post(GENERATE_PATH, json=CLIENT_BODY)

    assert generation.status_code == 200
    east = (await stats_by_name(client))["east"]
    assert east["state"] == "cooling"
    assert 25 < east["cooldown_remaining_s"] <= 30
    assert east["ready_in_s"] == east["cooldown_remaining_s"]
    assert east["errors_by_class"] == {"upstream_rate_limited": 1}
    assert east["is_active"] is True


async def test_server_errors_open_circuit(
    client: httpx.AsyncClient, simulator_control: SimulatorControl
) -> None:
    await simulator_control.set_fault("west", "server_error")

    for _ in range(3):
        await client.post(GENERATE_PATH, json=CLIENT_BODY)

    west = (await stats_by_name(client))["west"]
    assert west["state"] == "circuit_open"
    assert west["circuit_state"] == "open"
    assert west["consecutive_failures"] >= 3
    assert west["errors_by_class"]["upstream_server_error"] >= 3


async def test_check_reports_every_key(client: httpx.AsyncClient) -> None:
    checks = await check_keys(client)

    assert sorted(checks) == sorted(KEY_NAMES)
    for key in checks.values():
        assert key["state"] == "active"
        assert key["check"]["status"] == "ok"
        assert key["check"]["latency_ms"] > 0
        assert key["check"]["error_code"] is None
        assert datetime.fromisoformat(key["check"]["checked_at"]).tzinfo is not None


async def test_check_is_kept_in_stats(client: httpx.AsyncClient) -> None:
    checks = await check_keys(client)

    keys = await stats_by_name(client)
    for name in KEY_NAMES:
        assert keys[name]["last_health_check"] == checks[name]["check"]


async def test_check_marks_revoked_key_failed(
    client: httpx.AsyncClient, simulator_control: SimulatorControl
) -> None:
    await simulator_control.set_fault("west", "revoked")

    checks = await check_keys(client)

    west = checks["west"]
    assert west["check"]["status"] == "failed"
    assert west["check"]["error_code"] == "upstream_auth_failed"
    assert west["state"] == "disabled"
    assert checks["east"]["check"]["status"] == "ok"
    assert checks["north"]["check"]["status"] == "ok"


async def test_passing_check_restores_disabled_key(
    client: httpx.AsyncClient, simulator_control: SimulatorControl
) -> None:
    await simulator_control.set_fault("west", "revoked")
    for _ in range(3):
        await client.post(GENERATE_PATH, json=CLIENT_BODY)
    disabled = (await stats_by_name(client))["west"]
    await simulator_control.set_fault("west", "none")

    checks = await check_keys(client)

    assert disabled["state"] == "disabled"
    assert disabled["is_active"] is False
    assert checks["west"]["check"]["status"] == "ok"
    assert checks["west"]["state"] == "active"
    west = (await stats_by_name(client))["west"]
    assert west["is_active"] is True
    assert west["disabled_reason"] is None


async def test_dashboard_health_uses_state(
    client: httpx.AsyncClient, simulator_control: SimulatorControl
) -> None:
    await simulator_control.set_fault("east", "rate_limit", retry_after_s=30, count=1)
    await simulator_control.set_fault("north", "revoked")
    await client.post(GENERATE_PATH, json=CLIENT_BODY)
    await client.post(CHECK_PATH)

    response = await client.get(DASHBOARD_PATH)

    health = {item["name"]: item for item in response.json()["key_health"]}
    assert health["east"]["status"] == "cooling"
    assert health["east"]["last_health_check"]["status"] == "skipped"
    assert health["north"]["status"] == "disabled"
    assert health["north"]["last_health_check"]["error_code"] == "upstream_auth_failed"
    assert health["west"]["status"] == "healthy"
    assert health["west"]["last_health_check"]["status"] == "ok"
