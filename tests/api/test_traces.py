"""The trace routes over HTTP: a generation's stored trace, and the list of recent requests."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest

from microtopic.api.routes import PREFIX
from microtopic.config import (
    CacheConfig,
    GatewayConfig,
    RetryConfig,
    RetryStrategy,
    Settings,
    TracesConfig,
)
from tests.api.support import CLIENT_BODY, GENERATE_PATH, SimulatorControl

REQUESTS_PATH = f"{PREFIX}/requests"


def trace_path(request_id: str) -> str:
    return f"{REQUESTS_PATH}/{request_id}/trace"


async def generate(client: httpx.AsyncClient, **headers: str) -> str:
    response = await client.post(GENERATE_PATH, json=CLIENT_BODY, headers=headers)
    assert response.status_code == 200, response.text
    request_id: str = response.json()["metadata"]["request_id"]
    return request_id


def by_kind(trace: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [span for span in trace["spans"] if span["kind"] == kind]


async def test_trace_shows_every_part_of_generation(client: httpx.AsyncClient) -> None:
    request_id = await generate(client)

    response = await client.get(trace_path(request_id))

    assert response.status_code == 200
    trace = response.json()
    assert trace["request"]["id"] == request_id
    assert trace["request"]["status"] == "succeeded"
    names = [span["name"] for span in trace["spans"]]
    assert names[:2] == ["validate request", "store request"]
    assert names[-1] == "store outcome"
    steps = {span["name"]: span for span in by_kind(trace, "step")}
    assert {"plan", "write:1", "quiz:1"} <= set(steps)
    calls = by_kind(trace, "llm_call")
    assert len(calls) == trace["request"]["llm_calls"]
    step_ids = {span["span_id"] for span in steps.values()}
    assert all(call["parent_id"] in step_ids for call in calls)
    selections = by_kind(trace, "key_selection")
    assert len(selections) == len(calls)
    assert all(span["attributes"]["key"] for span in selections)
    assert len(by_kind(trace, "validation")) == 1 + len(calls)


async def test_trace_spans_fit_in_the_trace(client: httpx.AsyncClient) -> None:
    request_id = await generate(client)

    trace = (await client.get(trace_path(request_id))).json()

    ids = [span["span_id"] for span in trace["spans"]]
    assert len(ids) == len(set(ids))
    for span in trace["spans"]:
        assert span["offset_ms"] >= 0
        assert span["duration_ms"] >= 0
        assert span["offset_ms"] + span["duration_ms"] <= trace["duration_ms"] + 0.01
        assert span["parent_id"] is None or span["parent_id"] in ids


async def test_trace_shows_failover_with_keys_and_errors(
    client: httpx.AsyncClient, simulator_control: SimulatorControl
) -> None:
    await simulator_control.set_fault("east", "revoked")
    request_id = await generate(client)

    trace = (await client.get(trace_path(request_id))).json()

    calls = by_kind(trace, "llm_call")
    (failed,) = [call for call in calls if call["attributes"]["error"]]
    assert failed["attributes"]["key"] == "east"
    assert failed["attributes"]["error"] == "upstream_auth_failed"
    assert failed["attributes"]["attempt"] == 1
    retried = [
        call
        for call in calls
        if call["parent_id"] == failed["parent_id"] and call["attributes"]["attempt"] == 2
    ]
    assert len(retried) == 1
    assert retried[0]["attributes"]["key"] in ("west", "north")
    assert retried[0]["attributes"]["outcome"] == "success"
    assert retried[0]["attributes"]["prompt_tokens"] > 0
    assert trace["request"]["failed_calls"] == 1


async def test_trace_keeps_incoming_request_id(client: httpx.AsyncClient) -> None:
    request_id = await generate(client, **{"X-Request-ID": "client-chosen-id-1"})

    response = await client.get(trace_path(request_id))

    assert request_id == "client-chosen-id-1"
    assert response.status_code == 200
    assert response.headers["X-Request-ID"] != request_id


async def test_trace_holds_no_prompt_or_completion(client: httpx.AsyncClient) -> None:
    request_id = await generate(client)

    trace = (await client.get(trace_path(request_id))).json()

    attributes = json.dumps([span["attributes"] for span in trace["spans"]])
    assert "Algebra" not in attributes
    assert "Math" not in attributes
    for span in trace["spans"]:
        for value in span["attributes"].values():
            assert not isinstance(value, str) or len(value) <= 64


async def test_failed_generation_keeps_its_trace(
    client: httpx.AsyncClient, simulator_control: SimulatorControl
) -> None:
    for name in ("east", "west", "north"):
        await simulator_control.set_fault(name, "revoked")
    failed = await client.post(GENERATE_PATH, json=CLIENT_BODY)
    request_id = failed.json()["request_id"]

    trace = (await client.get(trace_path(request_id))).json()

    assert trace["request"]["status"] == "failed"
    assert trace["request"]["error_code"] == "all_keys_failed"
    (plan,) = by_kind(trace, "step")
    assert plan["name"] == "plan"
    assert plan["attributes"] == {"error": "all_keys_failed"}
    calls = by_kind(trace, "llm_call")
    assert [call["attributes"]["key"] for call in calls] == ["east", "west", "north"]
    assert all(call["parent_id"] == plan["span_id"] for call in calls)


async def test_unknown_trace_is_not_found(client: httpx.AsyncClient) -> None:
    response = await client.get(trace_path("no-such-request"))

    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


async def test_long_unknown_id_is_shortened(client: httpx.AsyncClient) -> None:
    request_id = "x" * 5000

    response = await client.get(trace_path(request_id))

    assert response.status_code == 404
    message = response.json()["error"]["message"]
    assert "(5000 characters)" in message
    assert len(message) < 300


async def test_list_shows_newest_first(client: httpx.AsyncClient) -> None:
    first = await generate(client)
    second = await generate(client)

    response = await client.get(REQUESTS_PATH)

    assert response.status_code == 200
    listed = response.json()["requests"]
    assert [request["id"] for request in listed] == [second, first]
    assert listed[0]["topic_name"] == "Algebra"
    assert listed[0]["llm_calls"] >= 3
    assert listed[0]["keys"]


async def test_list_filters_by_key_and_error(
    client: httpx.AsyncClient, simulator_control: SimulatorControl
) -> None:
    clean = await generate(client)
    await simulator_control.set_fault("north", "rate_limit", retry_after_ms=60_000)
    await asyncio.gather(*(generate(client) for _ in range(2)))

    rate_limited = await client.get(REQUESTS_PATH, params={"error": "upstream_rate_limited"})
    on_north = await client.get(REQUESTS_PATH, params={"key": "north"})
    succeeded = await client.get(REQUESTS_PATH, params={"status": "succeeded", "limit": 1})

    rate_limited_ids = {request["id"] for request in rate_limited.json()["requests"]}
    assert rate_limited_ids
    assert clean not in rate_limited_ids
    assert rate_limited_ids <= {request["id"] for request in on_north.json()["requests"]}
    assert len(succeeded.json()["requests"]) == 1


@pytest.mark.parametrize("query", [{"status": "done"}, {"limit": "0"}, {"limit": "501"}])
async def test_list_rejects_invalid_filter(
    client: httpx.AsyncClient, query: dict[str, str]
) -> None:
    response = await client.get(REQUESTS_PATH, params=query)

    assert response.status_code == 422
    assert response.json()["error"]["code"] == "invalid_request"


class TestRetention:
    @pytest.fixture
    def settings(self, settings: Settings) -> Settings:
        return settings.model_copy(update={"traces": TracesConfig(retention_s=0.5)})

    async def test_old_trace_is_not_found(self, client: httpx.AsyncClient) -> None:
        request_id = await generate(client)
        await asyncio.sleep(0.6)

        response = await client.get(trace_path(request_id))
        listed = await client.get(REQUESTS_PATH)

        assert response.status_code == 404
        assert "traces.retention_s" in response.json()["error"]["message"]
        assert listed.json()["requests"] == []


class TestCachedRequest:
    @pytest.fixture
    def cache_config(self) -> CacheConfig:
        return CacheConfig(enabled=True)

    async def test_cache_hit_shows_lookup(self, client: httpx.AsyncClient) -> None:
        await generate(client)
        request_id = await generate(client)

        trace = (await client.get(trace_path(request_id))).json()

        lookups = by_kind(trace, "cache")
        assert [span["attributes"]["hit"] for span in lookups] == [True]
        assert by_kind(trace, "llm_call") == []


class TestQueuedRequest:
    @pytest.fixture
    def gateway_config(self) -> GatewayConfig:
        retry = RetryStrategy(retries=2, delay_s=0.01)
        return GatewayConfig(
            max_concurrent_requests=1, retry=RetryConfig(first_request=retry, retry_request=retry)
        )

    @pytest.fixture
    def simulator_latency_s(self) -> float:
        return 0.05

    async def test_queue_wait_is_under_key_selection(self, client: httpx.AsyncClient) -> None:
        request_id = await generate(client)

        trace = (await client.get(trace_path(request_id))).json()

        waits = by_kind(trace, "queue")
        assert waits
        selections = {span["span_id"]: span for span in by_kind(trace, "key_selection")}
        for wait in waits:
            assert wait["parent_id"] in selections
            assert wait["duration_ms"] > 0
