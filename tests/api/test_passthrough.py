"""The OpenAI-compatible endpoints, called with the real openai SDK over HTTP.

The app runs under uvicorn on 127.0.0.1 and its three keys point at the simulator,
so every call crosses the SDK, our routes, the gateway and the SDK again.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import openai
import pytest

from microtopic import tokens
from tests.api.support import (
    API_VERSION,
    DEPLOYMENT,
    KEY_NAMES,
    STATS_PATH,
    SimulatorControl,
)
from tests.app_server import AppServer

GATEWAY_TOKEN = "gw-test-" + uuid.uuid4().hex
KEY_HEADER = "X-Microtopic-Key"
MESSAGES: list[Any] = [
    {"role": "system", "content": "You answer in one short paragraph."},
    {"role": "user", "content": "Explain what a linear equation is."},
]
ANSWER_SCHEMA = {
    "type": "object",
    "properties": {"answer": {"type": "string"}, "confidence": {"type": "integer"}},
    "required": ["answer", "confidence"],
    "additionalProperties": False,
}


@pytest.fixture
def gateway_api_keys() -> list[str]:
    return [GATEWAY_TOKEN]


@pytest.fixture
async def openai_client(app_server: AppServer) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(
        base_url=f"{app_server.base_url}/v1", api_key=GATEWAY_TOKEN, max_retries=0
    ) as client:
        yield client


@pytest.fixture
async def azure_client(app_server: AppServer) -> AsyncIterator[openai.AsyncAzureOpenAI]:
    async with openai.AsyncAzureOpenAI(
        azure_endpoint=app_server.base_url,
        api_version=API_VERSION,
        api_key=GATEWAY_TOKEN,
        max_retries=0,
    ) as client:
        yield client


async def key_stats(client: httpx.AsyncClient) -> dict[str, dict[str, Any]]:
    response = await client.get(STATS_PATH)
    response.raise_for_status()
    return {key["name"]: key for key in response.json()["keys"]}


async def test_openai_client_gets_completion(openai_client: openai.AsyncOpenAI) -> None:
    raw = await openai_client.chat.completions.with_raw_response.create(
        model="any-model", messages=MESSAGES, max_tokens=60
    )

    completion = raw.parse()
    assert raw.headers[KEY_HEADER] in KEY_NAMES
    assert completion.object == "chat.completion"
    assert completion.choices[0].message.content
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None
    assert completion.usage.prompt_tokens > 0
    assert completion.usage.completion_tokens > 0


async def test_azure_client_gets_completion(azure_client: openai.AsyncAzureOpenAI) -> None:
    completion = await azure_client.chat.completions.create(
        model="some-deployment", messages=MESSAGES, max_tokens=60
    )

    assert completion.choices[0].message.content
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None
    assert completion.usage.total_tokens > 0


async def test_body_fields_reach_provider(openai_client: openai.AsyncOpenAI) -> None:
    completion = await openai_client.chat.completions.create(
        model="any-model",
        messages=MESSAGES,
        max_tokens=200,
        temperature=0.2,
        seed=11,
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "answer", "schema": ANSWER_SCHEMA},
        },
    )

    content = completion.choices[0].message.content
    assert content is not None
    document = json.loads(content)
    assert set(document) == {"answer", "confidence"}
    assert isinstance(document["confidence"], int)


async def test_reply_names_serving_deployment(openai_client: openai.AsyncOpenAI) -> None:
    completion = await openai_client.chat.completions.create(
        model="not-a-deployment-of-ours", messages=MESSAGES, max_tokens=20
    )

    # The simulator reports the model behind the deployment the key sent, not the client's.
    assert completion.model.startswith(DEPLOYMENT)


async def test_usage_counted_on_serving_key(
    openai_client: openai.AsyncOpenAI, client: httpx.AsyncClient
) -> None:
    raw = await openai_client.chat.completions.with_raw_response.create(
        model="any-model", messages=MESSAGES, max_tokens=60
    )

    stats = await key_stats(client)
    served_by = raw.headers[KEY_HEADER]
    assert stats[served_by]["usage_count"] == 1
    assert stats[served_by]["error_count"] == 0
    for name in set(KEY_NAMES) - {served_by}:
        assert stats[name]["usage_count"] == 0


class TestQuota:
    """Keys with a token quota: a forwarded call is charged its admission tokens."""

    @pytest.fixture
    def tokens_per_minute(self) -> int | None:
        return 100_000

    async def test_call_charged_admission_tokens(
        self, openai_client: openai.AsyncOpenAI, client: httpx.AsyncClient
    ) -> None:
        raw = await openai_client.chat.completions.with_raw_response.create(
            model="any-model", messages=MESSAGES, max_tokens=60
        )

        quota = (await key_stats(client))[raw.headers[KEY_HEADER]]["quota"]
        expected = tokens.admission_tokens(MESSAGES, None, 60)
        assert quota["tokens_limit"] == 100_000
        assert quota["tokens_used"] == expected
        assert quota["tokens_remaining"] == 100_000 - expected
        assert quota["requests_limit"] is None
        assert quota["requests_used"] is None


async def test_revoked_key_fails_over(
    openai_client: openai.AsyncOpenAI,
    client: httpx.AsyncClient,
    simulator_control: SimulatorControl,
) -> None:
    for name in ("east", "west"):
        await simulator_control.set_fault(name, "revoked")

    raw = await openai_client.chat.completions.with_raw_response.create(
        model="any-model", messages=MESSAGES, max_tokens=60
    )

    assert raw.status_code == 200
    assert raw.headers[KEY_HEADER] == "north"
    stats = await key_stats(client)
    # Keys are tried in turn from the first: east, then west, then north.
    for name in KEY_NAMES:
        assert stats[name]["usage_count"] == 1
    for name in ("east", "west"):
        assert stats[name]["state"] == "disabled"
        assert stats[name]["errors_by_class"] == {"upstream_auth_failed": 1}
    assert stats["north"]["state"] == "active"


@pytest.mark.parametrize(
    ("fault", "finish_reason"),
    [("truncated", "length"), ("content_filter_completion", "content_filter")],
)
async def test_finish_reason_returned_as_is(
    openai_client: openai.AsyncOpenAI,
    client: httpx.AsyncClient,
    simulator_control: SimulatorControl,
    fault: str,
    finish_reason: str,
) -> None:
    for name in KEY_NAMES:
        await simulator_control.set_fault(name, fault)

    completion = await openai_client.chat.completions.create(
        model="any-model", messages=MESSAGES, max_tokens=40
    )

    assert completion.choices[0].finish_reason == finish_reason
    stats = await key_stats(client)
    assert sum(key["usage_count"] for key in stats.values()) == 1
    assert all(key["error_count"] == 0 for key in stats.values())


async def test_filtered_prompt_is_unprocessable(
    openai_client: openai.AsyncOpenAI, simulator_control: SimulatorControl
) -> None:
    for name in KEY_NAMES:
        await simulator_control.set_fault(name, "content_filter_prompt", category="hate")

    with pytest.raises(openai.UnprocessableEntityError) as caught:
        await openai_client.chat.completions.create(model="any-model", messages=MESSAGES)

    assert caught.value.status_code == 422
    assert caught.value.code == "content_filtered"
    assert isinstance(caught.value.body, dict)
    assert caught.value.body["categories"] == ["hate"]
    assert "simulated fault" not in caught.value.response.text


async def test_rejected_body_is_bad_request(
    openai_client: openai.AsyncOpenAI, client: httpx.AsyncClient
) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        await openai_client.chat.completions.create(
            model="any-model",
            messages=MESSAGES,
            response_format={"type": "json_schema", "json_schema": {"name": "no schema"}},
        )

    assert caught.value.code == "request_rejected"
    stats = await key_stats(client)
    assert all(key["error_count"] == 0 for key in stats.values())
    assert all(key["state"] == "active" for key in stats.values())


async def test_stream_is_rejected(
    openai_client: openai.AsyncOpenAI, simulator_control: SimulatorControl
) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        await openai_client.chat.completions.create(
            model="any-model", messages=MESSAGES, stream=True
        )

    assert caught.value.code == "streaming_not_supported"
    assert "stream" in caught.value.message
    assert (await simulator_control.stats())["total"]["calls"] == 0


async def test_empty_messages_are_invalid(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/v1/chat/completions",
        json={"model": "any-model", "messages": []},
        headers={"Authorization": f"Bearer {GATEWAY_TOKEN}"},
    )

    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "invalid_request"
    assert [field["field"] for field in error["fields"]] == ["messages"]


async def test_wrong_bearer_token_is_unauthorized(
    app_server: AppServer, simulator_control: SimulatorControl
) -> None:
    async with openai.AsyncOpenAI(
        base_url=f"{app_server.base_url}/v1", api_key="gw-wrong-" + uuid.uuid4().hex, max_retries=0
    ) as wrong:
        with pytest.raises(openai.AuthenticationError) as caught:
            await wrong.chat.completions.create(model="any-model", messages=MESSAGES)

    assert caught.value.status_code == 401
    assert caught.value.code == "invalid_api_key"
    assert caught.value.response.headers["WWW-Authenticate"].startswith("Bearer")
    assert (await simulator_control.stats())["total"]["calls"] == 0


async def test_wrong_api_key_header_is_unauthorized(app_server: AppServer) -> None:
    async with openai.AsyncAzureOpenAI(
        azure_endpoint=app_server.base_url,
        api_version=API_VERSION,
        api_key=GATEWAY_TOKEN + "x",
        max_retries=0,
    ) as wrong:
        with pytest.raises(openai.AuthenticationError) as caught:
            await wrong.chat.completions.create(model="any-model", messages=MESSAGES)

    assert caught.value.code == "invalid_api_key"


async def test_missing_token_is_unauthorized(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/v1/chat/completions", json={"model": "any-model", "messages": MESSAGES}
    )

    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_api_key"


async def test_token_is_never_logged(
    caplog: pytest.LogCaptureFixture, app_server: AppServer, openai_client: openai.AsyncOpenAI
) -> None:
    caplog.set_level(logging.DEBUG)

    await openai_client.chat.completions.create(model="any-model", messages=MESSAGES)
    async with openai.AsyncOpenAI(
        base_url=f"{app_server.base_url}/v1", api_key=GATEWAY_TOKEN[:-1], max_retries=0
    ) as wrong:
        with pytest.raises(openai.AuthenticationError):
            await wrong.chat.completions.create(model="any-model", messages=MESSAGES)

    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert "forwarded through key" in logged
    assert GATEWAY_TOKEN[8:-1] not in logged


class TestWithoutGatewayKeys:
    """No `gateway_api_keys`: the endpoints are off, whatever the client sends."""

    @pytest.fixture
    def gateway_api_keys(self) -> list[str]:
        return []

    async def test_call_is_forbidden(
        self, openai_client: openai.AsyncOpenAI, simulator_control: SimulatorControl
    ) -> None:
        with pytest.raises(openai.PermissionDeniedError) as caught:
            await openai_client.chat.completions.create(model="any-model", messages=MESSAGES)

        assert caught.value.status_code == 403
        assert caught.value.code == "passthrough_disabled"
        assert "gateway_api_keys" in caught.value.message
        assert (await simulator_control.stats())["total"]["calls"] == 0


async def test_body_not_sent_as_json_is_unsupported(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/v1/chat/completions",
        content=json.dumps({"model": "any-model", "messages": MESSAGES}),
        headers={"Authorization": f"Bearer {GATEWAY_TOKEN}", "Content-Type": "text/plain"},
    )

    assert response.status_code == 415
    assert response.json()["error"]["code"] == "unsupported_media_type"


async def test_body_over_a_mebibyte_is_forwarded(client: httpx.AsyncClient) -> None:
    # The passthrough admits long conversations, past the 1 MiB of the service's own routes.
    filler = {"role": "user", "content": "x" * (2 * 2**20)}

    response = await client.post(
        "/v1/chat/completions",
        json={"model": "any-model", "messages": [*MESSAGES, filler], "max_tokens": 20},
        headers={"Authorization": f"Bearer {GATEWAY_TOKEN}"},
    )

    assert response.status_code == 200, response.text[:500]
    assert response.json()["object"] == "chat.completion"


async def test_forwarded_call_cancelled_on_client_disconnect(
    app_server: AppServer, simulator_control: SimulatorControl
) -> None:
    for name in KEY_NAMES:
        await simulator_control.set_fault(name, "hang")
    body = {"model": "any", "messages": [{"role": "user", "content": "Hello"}]}
    headers = {"Authorization": f"Bearer {GATEWAY_TOKEN}"}

    async with httpx.AsyncClient(base_url=app_server.base_url, timeout=1.0) as http:
        with pytest.raises(httpx.ReadTimeout):
            await http.post("/v1/chat/completions", json=body, headers=headers)
    disconnects = 0
    for _ in range(100):
        stats = await simulator_control.stats()
        disconnects = stats["total"]["interrupted"]["client_disconnect"]
        if disconnects:
            break
        await asyncio.sleep(0.05)

    assert disconnects == 1
