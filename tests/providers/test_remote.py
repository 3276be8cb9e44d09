"""`RemoteProvider` against the simulator, through the real openai SDK over HTTP."""

from __future__ import annotations

import socket

import pytest

from microtopic.config import KeyConfig, ProviderKind, StructuredOutput
from microtopic.domain import TopicPlan
from microtopic.errors import (
    ConfigError,
    UpstreamAuthError,
    UpstreamBadRequestError,
    UpstreamConnectionError,
    UpstreamRateLimitError,
    UpstreamServerError,
    UpstreamTimeoutError,
)
from microtopic.providers.base import ChatMessage, ChatRequest, ChatResult
from microtopic.providers.remote import SCHEMA_BEGIN, RemoteProvider
from tests.harness import MODEL_NAME, SimulatorHarness, new_secret

PLAN_REQUEST = ChatRequest(
    messages=(
        ChatMessage("system", "You are a curriculum planner. Reply with JSON only."),
        ChatMessage("user", "Plan the topic.\n<topic>Photosynthesis</topic>"),
    ),
    schema_name="TopicPlan",
    json_schema=TopicPlan.model_json_schema(),
    max_tokens=400,
)


async def complete_with(key: KeyConfig, *, timeout_s: float = 10.0) -> ChatResult:
    provider = RemoteProvider.from_key(key)
    try:
        return await provider.complete(PLAN_REQUEST, timeout_s=timeout_s)
    finally:
        await provider.aclose()


async def test_azure_json_schema_reply_validates(azure_simulator: SimulatorHarness) -> None:
    key = azure_simulator.azure_key("east")

    result = await complete_with(key)

    plan = TopicPlan.model_validate_json(result.content)
    assert 3 <= len(plan.microtopics) <= 8
    assert result.model == MODEL_NAME
    assert result.finish_reason == "stop"
    assert result.prompt_tokens > 0
    assert result.completion_tokens > 0
    assert "x-request-id" in result.headers


async def test_azure_json_object_reply_validates(azure_simulator: SimulatorHarness) -> None:
    key = azure_simulator.azure_key("east", structured_output=StructuredOutput.JSON_OBJECT)

    result = await complete_with(key)

    plan = TopicPlan.model_validate_json(result.content)
    assert len(plan.microtopics) >= 3
    assert result.completion_tokens > 0


async def test_json_object_puts_schema_in_prompt(azure_simulator: SimulatorHarness) -> None:
    key = azure_simulator.azure_key("east", structured_output=StructuredOutput.JSON_OBJECT)
    provider = RemoteProvider.from_key(key)
    try:
        messages = provider._messages(PLAN_REQUEST)
        response_format = provider._response_format(PLAN_REQUEST)
    finally:
        await provider.aclose()

    assert response_format == {"type": "json_object"}
    assert len(messages) == len(PLAN_REQUEST.messages) + 1
    assert SCHEMA_BEGIN in messages[-1]["content"]
    assert '"microtopics"' in messages[-1]["content"]


async def test_openai_compatible_reply_validates(azure_simulator: SimulatorHarness) -> None:
    key = azure_simulator.openai_key("west")

    result = await complete_with(key)

    plan = TopicPlan.model_validate_json(result.content)
    assert len(plan.microtopics) >= 3
    assert result.prompt_tokens > 0
    assert result.completion_tokens > 0
    assert await azure_simulator.calls("west") == 1


async def test_sdk_retries_are_off(azure_simulator: SimulatorHarness) -> None:
    key = azure_simulator.azure_key("east")
    await azure_simulator.set_fault("east", "server_error", count=1)

    with pytest.raises(UpstreamServerError) as caught:
        await complete_with(key)

    assert caught.value.status_code == 500
    assert await azure_simulator.calls("east") == 1


async def test_revoked_key_raises_auth_error(azure_simulator: SimulatorHarness) -> None:
    key = azure_simulator.azure_key("east")
    await azure_simulator.set_fault("east", "revoked")

    with pytest.raises(UpstreamAuthError) as caught:
        await complete_with(key)

    assert caught.value.status_code == 401
    assert caught.value.disables_key


async def test_rate_limit_reads_retry_after(azure_simulator: SimulatorHarness) -> None:
    key = azure_simulator.openai_key("west")
    await azure_simulator.set_fault("west", "rate_limit", retry_after_ms=2500, count=1)

    with pytest.raises(UpstreamRateLimitError) as caught:
        await complete_with(key)

    # retry-after-ms: 2500 wins over its rounded-up retry-after: 3.
    assert caught.value.retry_after_s == 2.5
    assert await azure_simulator.calls("west") == 1


async def test_unknown_deployment_is_bad_request(azure_simulator: SimulatorHarness) -> None:
    key = azure_simulator.azure_key("east", deployment="gpt-missing")

    with pytest.raises(UpstreamBadRequestError) as caught:
        await complete_with(key)

    assert caught.value.status_code == 404
    assert "gpt-missing" not in caught.value.reason


async def test_slow_reply_times_out() -> None:
    async with SimulatorHarness.start(latency_s=0.5) as simulator:
        key = simulator.azure_key("east")

        with pytest.raises(UpstreamTimeoutError):
            await complete_with(key, timeout_s=0.1)


async def test_closed_port_raises_connection_error() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    key = KeyConfig(
        name="closed",
        provider=ProviderKind.OPENAI,
        endpoint=f"http://127.0.0.1:{port}/v1",
        model="gpt-4o-mini",
        secret=new_secret(),
    )

    with pytest.raises(UpstreamConnectionError):
        await complete_with(key)


def test_local_key_is_not_remote() -> None:
    key = KeyConfig(name="local", provider=ProviderKind.LOCAL)

    with pytest.raises(ConfigError, match="'local'"):
        RemoteProvider.from_key(key)
