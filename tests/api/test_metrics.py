"""`GET /metrics` after real traffic: the app under uvicorn, its keys served by the simulator."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from microtopic.api.routes import PREFIX
from tests.api.support import CLIENT_BODY, GENERATE_PATH, KEY_NAMES, SimulatorControl, enable_path

TOPIC_MARKER = "Metrics-topic-7f3a"


async def scrape(client: httpx.AsyncClient) -> list[Sample]:
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return [
        sample
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    ]


def value(samples: Iterable[Sample], name: str, **labels: str) -> float:
    """Return the sum of the samples called `name` whose labels include `labels`."""
    return sum(
        sample.value
        for sample in samples
        if sample.name == name and labels.items() <= sample.labels.items()
    )


def label_values(samples: Iterable[Sample], name: str, label: str) -> set[str]:
    return {sample.labels[label] for sample in samples if sample.name == name}


async def test_generation_traffic_is_measured(
    client: httpx.AsyncClient, simulator_control: SimulatorControl
) -> None:
    await simulator_control.set_fault("west", "revoked")
    body = {**CLIENT_BODY, "topic_name": TOPIC_MARKER}
    generations = await asyncio.gather(*(client.post(GENERATE_PATH, json=body) for _ in range(3)))
    await client.post(enable_path("south"))
    await client.get("/no/such/path")

    samples = await scrape(client)

    assert [response.status_code for response in generations] == [200] * 3
    http = "microtopic_http_request_duration_seconds_count"
    assert value(samples, http, method="POST", route=GENERATE_PATH, status_class="2xx") == 3
    enable_template = f"{PREFIX}/keys/{{name}}/enable"
    assert value(samples, http, route=enable_template, status_class="4xx") == 1
    assert value(samples, http, route="unmatched", status_class="4xx") == 1
    assert value(samples, "microtopic_errors_total", code="not_found") == 2
    assert value(samples, "microtopic_generation_duration_seconds_count", outcome="success") == 3
    stages = label_values(samples, "microtopic_pipeline_stage_duration_seconds_count", "stage")
    assert stages == {"plan", "write", "quiz"}


async def test_llm_calls_and_tokens_by_key(
    client: httpx.AsyncClient, simulator_control: SimulatorControl
) -> None:
    await simulator_control.set_fault("west", "revoked")
    responses = await asyncio.gather(
        *(client.post(GENERATE_PATH, json=CLIENT_BODY) for _ in range(4))
    )

    samples = await scrape(client)

    metadata = [response.json()["metadata"] for response in responses]
    calls = "microtopic_llm_call_duration_seconds_count"
    assert value(samples, calls) == sum(item["llm_calls"] for item in metadata)
    # Calls sent together may each meet west's 401 before the first one disables it.
    failed = value(samples, calls, key="west", outcome="upstream_auth_failed")
    assert failed >= 1
    assert value(samples, calls, key="west", outcome="success") == 0
    assert value(samples, calls, outcome="success") == value(samples, calls) - failed
    assert label_values(samples, calls, "key") <= set(KEY_NAMES)
    tokens = "microtopic_llm_tokens_total"
    prompt = sum(item["tokens"]["prompt_tokens"] for item in metadata)
    completion = sum(item["tokens"]["completion_tokens"] for item in metadata)
    assert value(samples, tokens, type="prompt") == prompt
    assert value(samples, tokens, type="completion") == completion


async def test_pool_state_is_read_at_scrape(
    client: httpx.AsyncClient, simulator_control: SimulatorControl
) -> None:
    await simulator_control.set_fault("west", "revoked")
    await simulator_control.set_fault("north", "rate_limit", retry_after_ms=30_000, count=1)
    await client.post(GENERATE_PATH, json=CLIENT_BODY)

    samples = await scrape(client)

    state = "microtopic_key_state"
    assert value(samples, state, key="west", state="disabled") == 1
    assert value(samples, state, key="west", state="active") == 0
    assert value(samples, state, key="north", state="cooling") == 1
    assert value(samples, state, key="east", state="active") == 1
    assert value(samples, state) == len(KEY_NAMES)
    cooldown = value(samples, "microtopic_key_cooldown_remaining_seconds", key="north")
    assert 20 < cooldown <= 30
    assert value(samples, "microtopic_key_cooldown_remaining_seconds", key="east") == 0
    for name in KEY_NAMES:
        assert value(samples, "microtopic_key_circuit_state", key=name, state="closed") == 1
        assert value(samples, "microtopic_key_active_calls", key=name) == 0
    assert value(samples, "microtopic_gateway_active_calls") == 0
    assert value(samples, "microtopic_gateway_queued_calls") == 0
    assert value(samples, "microtopic_gateway_max_concurrent_calls") == 10
    assert value(samples, "microtopic_gateway_max_queue_size") == 1000
    assert not [sample for sample in samples if sample.name.startswith("microtopic_key_tokens")]


async def test_labels_carry_no_request_data(
    client: httpx.AsyncClient, received: list[httpx.Response]
) -> None:
    body = {**CLIENT_BODY, "topic_name": TOPIC_MARKER}
    await client.post(GENERATE_PATH, json=body, headers={"X-Request-ID": "req-label-check"})
    await client.get(f"{PREFIX}/no-route/{TOPIC_MARKER}")

    response = await client.get("/metrics")

    assert TOPIC_MARKER not in response.text
    assert "req-label-check" not in response.text
    request_ids = [item.headers["X-Request-ID"] for item in received]
    for request_id in request_ids:
        assert request_id not in response.text


async def test_process_metrics_are_exposed(client: httpx.AsyncClient) -> None:
    samples = await scrape(client)

    assert value(samples, "process_resident_memory_bytes") > 0
    assert label_values(samples, "python_info", "implementation")


class TestWithTokenQuota:
    """Keys with a tokens-per-minute limit expose their token window."""

    @pytest.fixture
    def tokens_per_minute(self) -> int:
        return 1_000_000

    async def test_quota_gauges_follow_the_window(self, client: httpx.AsyncClient) -> None:
        response = await client.post(GENERATE_PATH, json=CLIENT_BODY)

        samples = await scrape(client)

        assert response.status_code == 200
        for name in KEY_NAMES:
            limit = value(samples, "microtopic_key_tokens_limit", key=name)
            used = value(samples, "microtopic_key_tokens_used", key=name)
            remaining = value(samples, "microtopic_key_tokens_remaining", key=name)
            assert limit == 1_000_000
            assert used + remaining == limit
        assert value(samples, "microtopic_key_tokens_used") > 0
        assert not [s for s in samples if s.name.startswith("microtopic_key_requests")]
