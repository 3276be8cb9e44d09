"""The routes over HTTP: generation, service stats, key re-enabling, the dashboard, health."""

from __future__ import annotations

import asyncio
import platform
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from microtopic.config import CacheConfig
from microtopic.domain import GeneratedTopic
from tests.api.support import (
    CLIENT_BODY,
    DASHBOARD_PATH,
    GENERATE_PATH,
    KEY_NAMES,
    STATS_PATH,
    SimulatorControl,
    enable_path,
    request_row,
)


async def generate_many(client: httpx.AsyncClient, count: int) -> list[httpx.Response]:
    return list(
        await asyncio.gather(*(client.post(GENERATE_PATH, json=CLIENT_BODY) for _ in range(count)))
    )


def keys_by_name(stats: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {key["name"]: key for key in stats["keys"]}


async def test_generate_returns_valid_lessons(client: httpx.AsyncClient) -> None:
    response = await client.post(GENERATE_PATH, json=CLIENT_BODY)

    assert response.status_code == 200
    body = response.json()
    assert body["success"] is True
    assert body["cached"] is False
    topic = GeneratedTopic.model_validate(body["data"])
    assert topic.subject_name == "Math"
    assert topic.topic_name == "Algebra"
    assert len(topic.microtopics) >= 3
    for microtopic in topic.microtopics:
        assert microtopic.explanation.strip()
        assert len(microtopic.quiz) >= 2


async def test_generate_returns_run_metadata(client: httpx.AsyncClient) -> None:
    response = await client.post(GENERATE_PATH, json=CLIENT_BODY)

    metadata = response.json()["metadata"]
    assert metadata["request_id"]
    assert metadata["steps"]
    assert {step["name"] for step in metadata["steps"]} >= {"plan", "write:1", "quiz:1"}
    for step in metadata["steps"]:
        started_at = datetime.fromisoformat(step["started_at"])
        finished_at = datetime.fromisoformat(step["finished_at"])
        assert started_at <= finished_at
    assert metadata["keys_used"]
    assert set(metadata["keys_used"]) <= set(KEY_NAMES)
    tokens = metadata["tokens"]
    assert tokens["prompt_tokens"] > 0
    assert tokens["completion_tokens"] > 0
    assert tokens["total_tokens"] == tokens["prompt_tokens"] + tokens["completion_tokens"]
    assert metadata["llm_calls"] >= len(metadata["steps"])
    assert metadata["duration_ms"] > 0


async def test_concurrent_requests_spread_over_keys(client: httpx.AsyncClient) -> None:
    responses = await generate_many(client, 30)
    stats_response = await client.get(STATS_PATH)

    assert [response.status_code for response in responses] == [200] * 30
    assert all(response.json()["success"] for response in responses)
    stats = stats_response.json()
    usage = [key["usage_count"] for key in stats["keys"]]
    assert len(usage) == len(KEY_NAMES)
    # The quota-aware policy sends each call to the key with the fewest in flight,
    # which spreads the load evenly but not call by call.
    even_share = sum(usage) / len(usage)
    assert all(abs(count - even_share) <= 0.1 * even_share for count in usage), usage
    capacity = stats["capacity"]
    assert capacity["max_concurrent_requests"] == 10
    assert capacity["active_requests"] == 0
    assert capacity["available_slots"] == capacity["max_concurrent_requests"]
    assert capacity["queued_requests"] == 0
    assert capacity["max_queue_size"] == 1000
    assert capacity["failed_requests"] == 0


async def test_revoked_key_leaves_rotation(
    client: httpx.AsyncClient, simulator_control: SimulatorControl
) -> None:
    await simulator_control.set_fault("west", "revoked")

    responses = await generate_many(client, 12)
    stats_response = await client.get(STATS_PATH)

    assert [response.status_code for response in responses] == [200] * 12
    keys = keys_by_name(stats_response.json())
    assert keys["west"]["is_active"] is False
    assert keys["west"]["error_count"] >= 1
    assert keys["west"]["disabled_reason"]
    assert keys["east"]["is_active"] is True
    assert keys["north"]["is_active"] is True
    for response in responses:
        assert "west" not in response.json()["metadata"]["keys_used"]


async def test_service_stats_count_errors_by_class(
    client: httpx.AsyncClient, simulator_control: SimulatorControl
) -> None:
    await simulator_control.set_fault("west", "server_error")

    responses = await generate_many(client, 6)
    simulated = await simulator_control.stats()
    stats_response = await client.get(STATS_PATH)

    assert [response.status_code for response in responses] == [200] * 6
    failures = simulated["keys"]["west"]["faults"]["server_error"]
    assert failures >= 1
    body = stats_response.json()
    keys = keys_by_name(body)
    for window in ("1m", "15m"):
        assert keys["west"][f"errors_last_{window}"] == {"upstream_server_error": failures}
        assert keys["west"][f"attempts_last_{window}"] == simulated["keys"]["west"]["calls"]
        for name in ("east", "north"):
            assert keys[name][f"errors_last_{window}"] == {}
            assert keys[name][f"attempts_last_{window}"] == simulated["keys"][name]["calls"]
    errors = body["errors"]
    assert errors["last_1m"]["window_s"] == 60.0
    assert errors["last_15m"]["window_s"] == 900.0
    assert errors["since_start"]["window_s"] is None
    for period in ("last_1m", "last_15m", "since_start"):
        counts = errors[period]
        assert counts["attempts"] == simulated["total"]["calls"]
        assert counts["failed"] == failures
        assert counts["failure_rate"] == round(failures / counts["attempts"], 4)
        assert counts["by_class"] == {
            "upstream_server_error": {"count": failures, "rate": counts["failure_rate"]}
        }


async def test_dashboard_reports_errors_by_class(
    client: httpx.AsyncClient, simulator_control: SimulatorControl
) -> None:
    await simulator_control.set_fault("north", "rate_limit", retry_after_ms=60_000, count=1)
    generation = await client.post(GENERATE_PATH, json=CLIENT_BODY)

    response = await client.get(DASHBOARD_PATH)

    assert generation.status_code == 200
    errors = response.json()["errors"]
    attempts = generation.json()["metadata"]["llm_calls"]
    for period in ("last_1m", "last_15m", "since_start"):
        assert errors[period]["attempts"] == attempts
        assert errors[period]["by_class"]["upstream_rate_limited"]["count"] == 1
    north = next(key for key in response.json()["key_stats"] if key["name"] == "north")
    assert north["errors_last_1m"] == {"upstream_rate_limited": 1}


async def test_enable_reactivates_revoked_key(
    client: httpx.AsyncClient, simulator_control: SimulatorControl
) -> None:
    await simulator_control.set_fault("west", "revoked")
    await generate_many(client, 3)

    response = await client.post(enable_path("west"))
    stats_response = await client.get(STATS_PATH)

    assert response.status_code == 200
    assert response.json()["name"] == "west"
    assert response.json()["is_active"] is True
    assert response.json()["disabled_reason"] is None
    assert keys_by_name(stats_response.json())["west"]["is_active"] is True


async def test_enable_unknown_key_is_not_found(client: httpx.AsyncClient) -> None:
    response = await client.post(enable_path("south"))

    assert response.status_code == 404
    body = response.json()
    assert body["success"] is False
    assert body["error"]["code"] == "not_found"
    assert "south" in body["error"]["message"]


async def test_service_stats_mask_secrets(
    client: httpx.AsyncClient, key_secrets: dict[str, str]
) -> None:
    response = await client.get(STATS_PATH)

    keys = keys_by_name(response.json())
    for name, secret in key_secrets.items():
        assert keys[name]["masked_secret"] == f"****{secret[-4:]}"
        assert secret not in response.text


async def test_dashboard_reports_operation_timings(client: httpx.AsyncClient) -> None:
    generation = await client.post(GENERATE_PATH, json=CLIENT_BODY)

    response = await client.get(DASHBOARD_PATH)

    assert generation.status_code == 200
    assert response.status_code == 200
    operations = {item["operation"]: item for item in response.json()["performance_stats"]}
    expected = {"generation", "llm_call", *(f"llm_call:{key}" for key in KEY_NAMES)}
    assert expected <= set(operations)
    for name in expected:
        stats = operations[name]
        assert stats["count"] >= 1
        assert 0 < stats["min_ms"] <= stats["p50_ms"] <= stats["p95_ms"] <= stats["max_ms"]
        assert stats["min_ms"] <= stats["mean_ms"] <= stats["max_ms"]
        assert len(stats["recent_ms"]) == min(stats["count"], 20)
    assert operations["generation"]["count"] == 1
    assert operations["llm_call"]["count"] == generation.json()["metadata"]["llm_calls"]


async def test_dashboard_reports_keys_and_system(client: httpx.AsyncClient) -> None:
    await client.post(GENERATE_PATH, json=CLIENT_BODY)

    response = await client.get(DASHBOARD_PATH)

    body = response.json()
    assert datetime.fromisoformat(body["timestamp"]).tzinfo is not None
    assert body["service_stats"]["active_requests"] == 0
    assert body["service_stats"]["total_requests"] >= 7
    assert [key["name"] for key in body["key_stats"]] == list(KEY_NAMES)
    assert all(key["usage_count"] > 0 for key in body["key_stats"])
    health = {item["name"]: item for item in body["key_health"]}
    assert set(health) == set(KEY_NAMES)
    assert all(item["status"] == "healthy" for item in health.values())
    assert all(item["error_rate"] == 0.0 for item in health.values())
    system = body["system"]
    assert system["python_version"] == platform.python_version()
    assert system["memory_rss_mb"] > 0
    assert system["uptime_s"] >= 0


async def test_dashboard_marks_revoked_key_disabled(
    client: httpx.AsyncClient, simulator_control: SimulatorControl
) -> None:
    await simulator_control.set_fault("north", "revoked")
    await client.post(GENERATE_PATH, json=CLIENT_BODY)

    response = await client.get(DASHBOARD_PATH)

    health = {item["name"]: item for item in response.json()["key_health"]}
    assert health["north"]["status"] == "disabled"
    assert health["north"]["error_rate"] > 0
    assert health["east"]["status"] == "healthy"


async def test_healthz_returns_ok(client: httpx.AsyncClient) -> None:
    response = await client.get("/healthz")

    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_requested_names_and_markup_come_back_verbatim(client: httpx.AsyncClient) -> None:
    markup = 'Q&A <b>tags</b> "quotes"'
    names = [markup, "Reflection", "Refraction", "Lenses"]
    body = {**CLIENT_BODY, "topic_name": markup, "microtopics": names}

    response = await client.post(GENERATE_PATH, json=body)

    assert response.status_code == 200
    data = response.json()["data"]
    assert data["topic_name"] == markup
    assert [microtopic["title"] for microtopic in data["microtopics"]] == names
    assert "&amp;" not in response.text
    assert "&lt;" not in response.text


# Emoji (one of them a ZWJ sequence), Arabic and Hebrew, and combining accents (a
# decomposed é and a Vietnamese letter with two marks).
UNICODE_TEXT = {
    "subject_name": "Mathématiques 🧮 الرياضيات",
    "topic_name": "Équations du 1er degré 👩\u200d🏫 עברית",
    "audience": "lớp 9",
}
UNICODE_MICROTOPICS = ["Cafe\u0301 arithmetic", "معادلات خطية", "משוואות 📈"]


async def test_unicode_text_round_trips(client: httpx.AsyncClient, database_path: Path) -> None:
    body = {**CLIENT_BODY, **UNICODE_TEXT, "microtopics": UNICODE_MICROTOPICS}

    response = await client.post(GENERATE_PATH, json=body)

    assert response.status_code == 200
    data = response.json()["data"]
    for field, text in UNICODE_TEXT.items():
        assert data[field] == text
    assert [microtopic["title"] for microtopic in data["microtopics"]] == UNICODE_MICROTOPICS
    row = request_row(database_path, response.json()["metadata"]["request_id"])
    assert row is not None
    assert row["subject_name"] == UNICODE_TEXT["subject_name"]
    assert row["topic_name"] == UNICODE_TEXT["topic_name"]


class TestCache:
    """The content cache on, in memory."""

    @pytest.fixture
    def cache_config(self) -> CacheConfig:
        return CacheConfig()

    async def test_repeated_request_is_cached(
        self, client: httpx.AsyncClient, database_path: Path
    ) -> None:
        first = await client.post(GENERATE_PATH, json=CLIENT_BODY)

        second = await client.post(GENERATE_PATH, json=CLIENT_BODY)

        assert first.json()["cached"] is False
        body = second.json()
        assert second.status_code == 200
        assert body["cached"] is True
        assert body["data"] == first.json()["data"]
        metadata = body["metadata"]
        assert metadata["request_id"] != first.json()["metadata"]["request_id"]
        assert metadata["llm_calls"] == 0
        assert metadata["keys_used"] == []
        assert metadata["tokens"]["total_tokens"] == 0
        assert metadata["models"] == first.json()["metadata"]["models"]
        assert [step["name"] for step in metadata["steps"]] == ["cache"]
        row = request_row(database_path, metadata["request_id"])
        assert row is not None
        assert row["status"] == "succeeded"

    async def test_retry_is_generated_again(
        self, client: httpx.AsyncClient, simulator_control: SimulatorControl
    ) -> None:
        await client.post(GENERATE_PATH, json=CLIENT_BODY)
        calls_before = (await simulator_control.stats())["total"]["calls"]

        response = await client.post(GENERATE_PATH, json={**CLIENT_BODY, "is_retry": True})

        calls_after = (await simulator_control.stats())["total"]["calls"]
        assert response.json()["cached"] is False
        assert calls_after - calls_before == response.json()["metadata"]["llm_calls"]
