"""Each fault kind, injected through the control API or drawn at a rate, seen by the openai SDK."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator

import httpx
import openai
import pytest
from openai.types.shared_params import ResponseFormatJSONSchema

from microtopic.domain import TopicPlan
from microtopic.simulator import SimulatedKey, SimulatorConfig, SimulatorServer
from tests.simulator.constants import API_VERSION, DEPLOYMENT, EAST_SECRET
from tests.simulator.support import USER_PROMPT, ManualClock, key_stats, set_fault

FILTER_CATEGORIES = {"hate", "sexual", "violence", "self_harm"}
PLAN_FORMAT: ResponseFormatJSONSchema = {
    "type": "json_schema",
    "json_schema": {"name": "TopicPlan", "schema": TopicPlan.model_json_schema()},
}


@pytest.fixture
async def quota_client(simulator: SimulatorServer) -> AsyncIterator[openai.AsyncAzureOpenAI]:
    """A client of the key `limited`, which allows 10 requests per 10 s window."""
    async with openai.AsyncAzureOpenAI(
        azure_endpoint=simulator.azure_endpoint,
        api_key="sim-limited-secret",
        api_version=API_VERSION,
        max_retries=0,
    ) as client:
        yield client


@pytest.fixture
def simulator_config() -> SimulatorConfig:
    return SimulatorConfig(
        keys=[
            SimulatedKey(name="east", secret=EAST_SECRET, deployments=[DEPLOYMENT]),
            SimulatedKey(
                name="limited",
                secret="sim-limited-secret",
                requests_per_minute=60,
                tokens_per_minute=100_000,
            ),
        ],
        seed=7,
        hang_s=60,
    )


async def test_rate_limit_fault_consumes_no_quota(
    quota_client: openai.AsyncAzureOpenAI, http: httpx.AsyncClient
) -> None:
    await set_fault(http, "limited", kind="rate_limit", retry_after_ms=2500, count=1)

    with pytest.raises(openai.RateLimitError) as caught:
        await quota_client.chat.completions.create(model=DEPLOYMENT, messages=USER_PROMPT)

    headers = caught.value.response.headers
    stats = await key_stats(http, "limited")
    assert headers["retry-after"] == "3"
    assert headers["retry-after-ms"] == "2500"
    assert headers["x-ms-retry-after-ms"] == "2500"
    assert headers["x-ratelimit-limit-requests"] == "10"
    assert headers["x-ratelimit-remaining-requests"] == "10"
    assert headers["x-ratelimit-limit-tokens"] == "100000"
    assert headers["x-ratelimit-remaining-tokens"] == "100000"
    assert stats["rate_limited"] == {"quota": 0, "injected": 1}
    assert stats["requests"]["admitted"] == 0


async def test_service_unavailable_returns_503(
    azure_client: openai.AsyncAzureOpenAI, http: httpx.AsyncClient
) -> None:
    await set_fault(http, "east", kind="service_unavailable", count=1)

    with pytest.raises(openai.InternalServerError) as caught:
        await azure_client.chat.completions.create(model=DEPLOYMENT, messages=USER_PROMPT)

    assert caught.value.status_code == 503
    assert caught.value.code == "ServiceUnavailable"
    assert "simulated fault" in caught.value.message


async def test_insufficient_quota_retries_after_a_day(
    azure_client: openai.AsyncAzureOpenAI, http: httpx.AsyncClient
) -> None:
    await set_fault(http, "east", kind="insufficient_quota", count=1)

    with pytest.raises(openai.RateLimitError) as caught:
        await azure_client.chat.completions.create(model=DEPLOYMENT, messages=USER_PROMPT)

    body = caught.value.response.json()
    assert caught.value.code == "insufficient_quota"
    assert body["error"]["code"] == "insufficient_quota"
    assert caught.value.response.headers["retry-after"] == "86400"
    assert (await key_stats(http, "east"))["rate_limited"] == {"quota": 0, "injected": 1}


async def test_content_filter_prompt_is_azure_400(
    azure_client: openai.AsyncAzureOpenAI, http: httpx.AsyncClient
) -> None:
    await set_fault(http, "east", kind="content_filter_prompt", category="self_harm", count=1)

    with pytest.raises(openai.BadRequestError) as caught:
        await azure_client.chat.completions.create(model=DEPLOYMENT, messages=USER_PROMPT)

    error = caught.value.response.json()["error"]
    results = error["innererror"]["content_filter_result"]
    assert caught.value.status_code == 400
    assert caught.value.code == "content_filter"
    assert error["innererror"]["code"] == "ResponsibleAIPolicyViolation"
    assert set(results) == FILTER_CATEGORIES
    assert results["self_harm"] == {"filtered": True, "severity": "medium"}
    for category in FILTER_CATEGORIES - {"self_harm"}:
        assert results[category] == {"filtered": False, "severity": "safe"}


async def test_content_filter_completion_has_null_content(
    azure_client: openai.AsyncAzureOpenAI, http: httpx.AsyncClient
) -> None:
    await set_fault(http, "east", kind="content_filter_completion", count=1)

    completion = await azure_client.chat.completions.create(model=DEPLOYMENT, messages=USER_PROMPT)

    choice = completion.choices[0]
    results = (choice.model_extra or {})["content_filter_results"]
    assert choice.finish_reason == "content_filter"
    assert choice.message.content is None
    assert set(results) == FILTER_CATEGORIES
    assert results["violence"] == {"filtered": True, "severity": "medium"}
    assert results["hate"] == {"filtered": False, "severity": "safe"}
    assert completion.usage is not None
    assert completion.usage.completion_tokens > 0


async def test_truncated_reply_stops_at_max_tokens(
    azure_client: openai.AsyncAzureOpenAI, http: httpx.AsyncClient
) -> None:
    await set_fault(http, "east", kind="truncated", count=1)
    truncated = await azure_client.chat.completions.create(
        model=DEPLOYMENT, messages=USER_PROMPT, response_format=PLAN_FORMAT, max_tokens=300
    )
    await http.post("/_simulator/reset")

    full = await azure_client.chat.completions.create(
        model=DEPLOYMENT, messages=USER_PROMPT, response_format=PLAN_FORMAT, max_tokens=300
    )

    content = truncated.choices[0].message.content or ""
    full_content = full.choices[0].message.content or ""
    assert truncated.choices[0].finish_reason == "length"
    assert truncated.usage is not None
    assert truncated.usage.completion_tokens == 300
    assert content == full_content[: len(full_content) // 2]
    with pytest.raises(json.JSONDecodeError):
        json.loads(content)


async def test_fenced_json_wraps_valid_json(
    azure_client: openai.AsyncAzureOpenAI, http: httpx.AsyncClient
) -> None:
    await set_fault(http, "east", kind="fenced_json", count=1)

    completion = await azure_client.chat.completions.create(
        model=DEPLOYMENT, messages=USER_PROMPT, response_format=PLAN_FORMAT
    )

    content = completion.choices[0].message.content or ""
    assert completion.choices[0].finish_reason == "stop"
    assert content.startswith("```json\n")
    assert content.endswith("\n```")
    TopicPlan.model_validate_json(content.removeprefix("```json\n").removesuffix("\n```"))


async def test_connection_reset_is_connection_error(
    azure_client: openai.AsyncAzureOpenAI, http: httpx.AsyncClient
) -> None:
    await set_fault(http, "east", kind="connection_reset", count=1)

    with pytest.raises(openai.APIConnectionError) as caught:
        await azure_client.chat.completions.create(model=DEPLOYMENT, messages=USER_PROMPT)

    stats = await key_stats(http, "east")
    assert type(caught.value) is openai.APIConnectionError
    assert "peer closed connection" in str(caught.value.__cause__)
    assert stats["interrupted"] == {"connection_reset": 1, "client_disconnect": 0}
    assert stats["calls"] == 1
    assert stats["successes"] == 0


async def test_connection_reset_cuts_body_short(http: httpx.AsyncClient) -> None:
    await set_fault(http, "east", kind="connection_reset", count=1)

    async with http.stream(
        "POST",
        f"/openai/deployments/{DEPLOYMENT}/chat/completions",
        params={"api-version": API_VERSION},
        headers={"api-key": EAST_SECRET},
        json={"messages": USER_PROMPT},
    ) as response:
        with pytest.raises(httpx.RemoteProtocolError):
            await response.aread()

    assert response.status_code == 200
    assert int(response.headers["content-length"]) > 0


async def test_hang_stops_when_client_times_out(
    simulator: SimulatorServer, http: httpx.AsyncClient
) -> None:
    await set_fault(http, "limited", kind="hang", count=1)
    client = openai.AsyncAzureOpenAI(
        azure_endpoint=simulator.azure_endpoint,
        api_key="sim-limited-secret",
        api_version=API_VERSION,
        max_retries=0,
        timeout=0.5,
    )

    async with client:
        with pytest.raises(openai.APITimeoutError):
            await client.chat.completions.create(model=DEPLOYMENT, messages=USER_PROMPT)

    # The server notices the disconnect at once, so 10 s is a generous deadline.
    deadline = time.monotonic() + 10
    stats = await key_stats(http, "limited")
    while stats["interrupted"]["client_disconnect"] == 0 and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
        stats = await key_stats(http, "limited")
    assert stats["interrupted"] == {"connection_reset": 0, "client_disconnect": 1}
    assert stats["faults"] == {"hang": 1}
    assert stats["requests"]["admitted"] == 0


async def test_hang_answers_408_after_hang_s() -> None:
    config = SimulatorConfig(keys=[SimulatedKey(name="east", secret="s")], hang_s=0.2)

    with SimulatorServer(config) as simulator:
        async with httpx.AsyncClient(base_url=simulator.base_url) as http:
            await set_fault(http, "east", kind="hang", count=1)
            client = openai.AsyncOpenAI(
                base_url=simulator.openai_base_url, api_key="s", max_retries=0, timeout=30
            )
            async with client:
                started_s = time.monotonic()
                with pytest.raises(openai.APIStatusError) as caught:
                    await client.chat.completions.create(model="m", messages=USER_PROMPT)
                elapsed_s = time.monotonic() - started_s
            stats = await key_stats(http, "east")

    assert caught.value.status_code == 408
    assert caught.value.code == "timeout"
    assert elapsed_s >= 0.2
    assert stats["status_counts"] == {"408": 1}


async def test_reply_fault_waits_for_admitted_call() -> None:
    clock = ManualClock()
    config = SimulatorConfig(
        keys=[SimulatedKey(name="east", secret="s", requests_per_minute=6)], time_scale=10
    )

    with SimulatorServer(config, monotonic=clock) as simulator:
        async with (
            httpx.AsyncClient(base_url=simulator.base_url) as control,
            openai.AsyncOpenAI(
                base_url=simulator.openai_base_url, api_key="s", max_retries=0
            ) as client,
        ):
            await client.chat.completions.create(model="m", messages=USER_PROMPT)
            await set_fault(control, "east", kind="truncated", count=1)
            with pytest.raises(openai.RateLimitError):
                await client.chat.completions.create(model="m", messages=USER_PROMPT)
            clock.advance(1.0)
            completion = await client.chat.completions.create(model="m", messages=USER_PROMPT)

    assert completion.choices[0].finish_reason == "length"


async def test_fault_rates_repeat_with_seed() -> None:
    config = SimulatorConfig(
        keys=[
            SimulatedKey(name="east", secret="s"),
            SimulatedKey(name="calm", secret="c", fault_rates={"server_error": 0.0}),
        ],
        fault_rates={"server_error": 0.5},
        seed=5,
    )

    runs = []
    for _ in range(2):
        with SimulatorServer(config) as simulator:
            async with openai.AsyncOpenAI(
                base_url=simulator.openai_base_url, api_key="s", max_retries=0
            ) as client:
                runs.append([await _status(client) for _ in range(30)])
            async with openai.AsyncOpenAI(
                base_url=simulator.openai_base_url, api_key="c", max_retries=0
            ) as calm:
                calm_statuses = [await _status(calm) for _ in range(10)]

    assert runs[0] == runs[1]
    assert set(runs[0]) == {200, 500}
    assert calm_statuses == [200] * 10


async def _status(client: openai.AsyncOpenAI) -> int:
    try:
        await client.chat.completions.create(model="m", messages=USER_PROMPT)
    except openai.APIStatusError as exc:
        return exc.status_code
    return 200
