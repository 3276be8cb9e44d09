"""The simulator's routes, called over HTTP by the real openai SDK."""

from __future__ import annotations

import json
from typing import Any

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam
from openai.types.shared_params import ResponseFormatJSONSchema
from pydantic import BaseModel

from microtopic.domain import MicrotopicDraft, TopicPlan
from microtopic.simulator import SimulatedKey, SimulatorConfig, SimulatorServer
from microtopic.tokens import count_text, prompt_tokens
from tests.simulator.constants import API_VERSION, DEPLOYMENT, EAST_SECRET

USER_PROMPT: list[ChatCompletionMessageParam] = [
    {"role": "user", "content": "Write the lesson. <topic>Linear equations</topic>"}
]


def _json_schema_format(schema: dict[str, object], name: str) -> ResponseFormatJSONSchema:
    return {"type": "json_schema", "json_schema": {"name": name, "schema": schema}}


def _model_format(model: type[BaseModel]) -> ResponseFormatJSONSchema:
    return _json_schema_format(model.model_json_schema(), model.__name__)


async def _set_fault(http: httpx.AsyncClient, key_name: str, **fault: Any) -> None:
    response = await http.put(f"/_simulator/keys/{key_name}/fault", json=fault)
    response.raise_for_status()


async def test_json_schema_reply_validates(azure_client: openai.AsyncAzureOpenAI) -> None:
    completion = await azure_client.chat.completions.create(
        model=DEPLOYMENT,
        messages=USER_PROMPT,
        response_format=_model_format(MicrotopicDraft),
    )

    content = completion.choices[0].message.content
    assert content is not None
    draft = MicrotopicDraft.model_validate_json(content)
    assert "Linear equations" in draft.title
    assert completion.choices[0].finish_reason == "stop"
    assert completion.model == "gpt-4o-mini-2024-07-18"


async def test_usage_counts_o200k_tokens(azure_client: openai.AsyncAzureOpenAI) -> None:
    messages: list[ChatCompletionMessageParam] = [{"role": "user", "content": "x" * 41}]

    completion = await azure_client.chat.completions.create(model=DEPLOYMENT, messages=messages)

    usage = completion.usage
    content = completion.choices[0].message.content or ""
    assert usage is not None
    # 3 tokens of reply priming, 3 of message framing, 1 for "user", 6 for the x's.
    assert usage.prompt_tokens == 13
    assert usage.prompt_tokens == prompt_tokens([{"role": "user", "content": "x" * 41}])
    assert usage.completion_tokens == count_text(content)
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


async def test_json_object_fills_prompt_schema(azure_client: openai.AsyncAzureOpenAI) -> None:
    schema = json.dumps(TopicPlan.model_json_schema(), indent=2)
    messages: list[ChatCompletionMessageParam] = [
        {
            "role": "system",
            "content": f"Reply with JSON.\nBEGIN JSON SCHEMA\n{schema}\nEND JSON SCHEMA\n",
        },
        *USER_PROMPT,
    ]

    completion = await azure_client.chat.completions.create(
        model=DEPLOYMENT, messages=messages, response_format={"type": "json_object"}
    )

    plan = TopicPlan.model_validate_json(completion.choices[0].message.content or "")
    assert 3 <= len(plan.microtopics) <= 8


async def test_json_object_without_schema_is_empty(
    azure_client: openai.AsyncAzureOpenAI,
) -> None:
    completion = await azure_client.chat.completions.create(
        model=DEPLOYMENT, messages=USER_PROMPT, response_format={"type": "json_object"}
    )

    assert completion.choices[0].message.content == "{}"


async def test_plain_reply_mentions_topic(azure_client: openai.AsyncAzureOpenAI) -> None:
    completion = await azure_client.chat.completions.create(model=DEPLOYMENT, messages=USER_PROMPT)

    assert "Linear equations" in (completion.choices[0].message.content or "")


async def test_azure_reply_has_filters_and_ids(http: httpx.AsyncClient) -> None:
    response = await http.post(
        f"/openai/deployments/{DEPLOYMENT}/chat/completions",
        params={"api-version": API_VERSION},
        headers={"api-key": EAST_SECRET},
        json={"messages": USER_PROMPT},
    )

    body = response.json()
    assert response.status_code == 200
    assert body["prompt_filter_results"][0]["prompt_index"] == 0
    assert body["choices"][0]["content_filter_results"]["hate"]["filtered"] is False
    assert response.headers["x-request-id"]
    assert response.headers["apim-request-id"] == response.headers["x-request-id"]


async def test_azure_accepts_bearer_token(http: httpx.AsyncClient) -> None:
    response = await http.post(
        f"/openai/deployments/{DEPLOYMENT}/chat/completions",
        params={"api-version": API_VERSION},
        headers={"authorization": f"Bearer {EAST_SECRET}"},
        json={"messages": USER_PROMPT},
    )

    assert response.status_code == 200


async def test_openai_route_uses_body_model(openai_client: openai.AsyncOpenAI) -> None:
    completion = await openai_client.chat.completions.create(
        model="any-model",
        messages=USER_PROMPT,
        response_format=_model_format(TopicPlan),
    )

    TopicPlan.model_validate_json(completion.choices[0].message.content or "")
    assert completion.model == "any-model"
    assert completion.object == "chat.completion"


async def test_wrong_key_is_unauthorized(simulator: SimulatorServer) -> None:
    client = openai.AsyncAzureOpenAI(
        azure_endpoint=simulator.azure_endpoint,
        api_key="not-a-configured-key",
        api_version=API_VERSION,
        max_retries=0,
    )

    async with client:
        with pytest.raises(openai.AuthenticationError) as caught:
            await client.chat.completions.create(model=DEPLOYMENT, messages=USER_PROMPT)

    assert caught.value.status_code == 401
    assert caught.value.code == "401"
    assert "Access denied" in caught.value.message
    assert "not-a-configured-key" not in caught.value.response.text


async def test_openai_wrong_key_is_unauthorized(simulator: SimulatorServer) -> None:
    client = openai.AsyncOpenAI(
        base_url=simulator.openai_base_url, api_key=EAST_SECRET + "x", max_retries=0
    )

    async with client:
        with pytest.raises(openai.AuthenticationError) as caught:
            await client.chat.completions.create(model=DEPLOYMENT, messages=USER_PROMPT)

    assert caught.value.code == "invalid_api_key"


async def test_unknown_deployment_is_not_found(azure_client: openai.AsyncAzureOpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        await azure_client.chat.completions.create(model="gpt-5-turbo", messages=USER_PROMPT)

    assert caught.value.code == "DeploymentNotFound"
    assert "gpt-5-turbo" in caught.value.message


async def test_rate_limit_fault_sends_retry_hints(
    azure_client: openai.AsyncAzureOpenAI, http: httpx.AsyncClient
) -> None:
    await _set_fault(http, "east", kind="rate_limit", retry_after_ms=1500)

    with pytest.raises(openai.RateLimitError) as caught:
        await azure_client.chat.completions.create(model=DEPLOYMENT, messages=USER_PROMPT)

    headers = caught.value.response.headers
    assert caught.value.code == "429"
    assert headers["retry-after-ms"] == "1500"
    assert headers["x-ms-retry-after-ms"] == "1500"
    assert headers["retry-after"] == "2"
    assert "retry after 2 seconds" in caught.value.message


async def test_rate_limit_seconds_round_up(
    azure_client: openai.AsyncAzureOpenAI, http: httpx.AsyncClient
) -> None:
    await _set_fault(http, "east", kind="rate_limit", retry_after_s=0.2)

    with pytest.raises(openai.RateLimitError) as caught:
        await azure_client.chat.completions.create(model=DEPLOYMENT, messages=USER_PROMPT)

    headers = caught.value.response.headers
    assert headers["retry-after"] == "1"
    assert "retry-after-ms" not in headers


async def test_rate_limit_without_hints_sends_none(
    azure_client: openai.AsyncAzureOpenAI, http: httpx.AsyncClient
) -> None:
    await _set_fault(http, "east", kind="rate_limit")

    with pytest.raises(openai.RateLimitError) as caught:
        await azure_client.chat.completions.create(model=DEPLOYMENT, messages=USER_PROMPT)

    assert "retry-after" not in caught.value.response.headers


async def test_count_limited_fault_recovers(
    azure_client: openai.AsyncAzureOpenAI, http: httpx.AsyncClient
) -> None:
    await _set_fault(http, "east", kind="rate_limit", retry_after_s=1, count=2)

    for _ in range(2):
        with pytest.raises(openai.RateLimitError):
            await azure_client.chat.completions.create(model=DEPLOYMENT, messages=USER_PROMPT)
    completion = await azure_client.chat.completions.create(model=DEPLOYMENT, messages=USER_PROMPT)

    assert completion.choices[0].finish_reason == "stop"


async def test_fault_affects_only_its_key(
    openai_client: openai.AsyncOpenAI, http: httpx.AsyncClient
) -> None:
    await _set_fault(http, "east", kind="server_error")

    completion = await openai_client.chat.completions.create(model=DEPLOYMENT, messages=USER_PROMPT)

    assert completion.choices[0].finish_reason == "stop"


async def test_server_error_fault_returns_500(
    azure_client: openai.AsyncAzureOpenAI, http: httpx.AsyncClient
) -> None:
    await _set_fault(http, "east", kind="server_error")

    with pytest.raises(openai.InternalServerError) as caught:
        await azure_client.chat.completions.create(model=DEPLOYMENT, messages=USER_PROMPT)

    assert caught.value.status_code == 500
    assert caught.value.code == "InternalServerError"


async def test_revoked_fault_is_unauthorized(
    azure_client: openai.AsyncAzureOpenAI, http: httpx.AsyncClient
) -> None:
    await _set_fault(http, "east", kind="revoked")

    with pytest.raises(openai.AuthenticationError) as caught:
        await azure_client.chat.completions.create(model=DEPLOYMENT, messages=USER_PROMPT)

    assert caught.value.code == "401"


async def test_fault_kind_none_clears_fault(
    azure_client: openai.AsyncAzureOpenAI, http: httpx.AsyncClient
) -> None:
    await _set_fault(http, "east", kind="revoked")
    await _set_fault(http, "east", kind="none")

    completion = await azure_client.chat.completions.create(model=DEPLOYMENT, messages=USER_PROMPT)

    assert completion.choices[0].finish_reason == "stop"


async def test_stats_count_calls_by_status(
    azure_client: openai.AsyncAzureOpenAI, http: httpx.AsyncClient
) -> None:
    await azure_client.chat.completions.create(model=DEPLOYMENT, messages=USER_PROMPT)
    await _set_fault(http, "east", kind="rate_limit", count=1)
    with pytest.raises(openai.RateLimitError):
        await azure_client.chat.completions.create(model=DEPLOYMENT, messages=USER_PROMPT)

    stats = (await http.get("/_simulator/stats")).json()

    east = stats["keys"]["east"]
    assert east["calls"] == 2
    assert east["successes"] == 1
    assert east["status_counts"] == {"200": 1, "429": 1}
    assert east["fault"] is None
    assert stats["keys"]["west"]["calls"] == 0
    assert stats["total"]["calls"] == 2


async def test_stats_total_counts_unknown_keys(
    simulator: SimulatorServer, http: httpx.AsyncClient
) -> None:
    await http.post("/v1/chat/completions", headers={"authorization": "Bearer nope"}, json={})

    stats = (await http.get("/_simulator/stats")).json()

    assert stats["total"]["status_counts"] == {"401": 1}
    assert stats["keys"]["east"]["calls"] == 0


async def test_reset_clears_faults_and_counts(
    azure_client: openai.AsyncAzureOpenAI, http: httpx.AsyncClient
) -> None:
    await _set_fault(http, "east", kind="server_error")
    with pytest.raises(openai.InternalServerError):
        await azure_client.chat.completions.create(model=DEPLOYMENT, messages=USER_PROMPT)

    reset = await http.post("/_simulator/reset")
    completion = await azure_client.chat.completions.create(model=DEPLOYMENT, messages=USER_PROMPT)

    assert reset.json()["total"]["calls"] == 0
    assert completion.choices[0].finish_reason == "stop"


async def test_missing_api_version_is_bad_request(http: httpx.AsyncClient) -> None:
    response = await http.post(
        f"/openai/deployments/{DEPLOYMENT}/chat/completions",
        headers={"api-key": EAST_SECRET},
        json={"messages": USER_PROMPT},
    )

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "MissingApiVersionParameter"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"messages": []}, "messages"),
        ({"messages": USER_PROMPT, "stream": True}, "stream"),
        ({"messages": USER_PROMPT, "max_tokens": 0}, "max_tokens"),
        ({"messages": USER_PROMPT, "response_format": {"type": "xml"}}, "response_format"),
    ],
)
async def test_invalid_body_is_bad_request(
    http: httpx.AsyncClient, body: dict[str, Any], param: str
) -> None:
    response = await http.post(
        f"/openai/deployments/{DEPLOYMENT}/chat/completions",
        params={"api-version": API_VERSION},
        headers={"api-key": EAST_SECRET},
        json=body,
    )

    assert response.status_code == 400
    assert response.json()["error"]["param"].startswith(param)


async def test_non_json_body_is_bad_request(http: httpx.AsyncClient) -> None:
    response = await http.post(
        f"/openai/deployments/{DEPLOYMENT}/chat/completions",
        params={"api-version": API_VERSION},
        headers={"api-key": EAST_SECRET, "content-type": "application/json"},
        content=b"{not json",
    )

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "BadRequest"


async def test_unfillable_schema_is_bad_request(
    azure_client: openai.AsyncAzureOpenAI,
) -> None:
    schema: dict[str, object] = {"type": "string", "pattern": "^[0-9]{4}$"}

    with pytest.raises(openai.BadRequestError) as caught:
        await azure_client.chat.completions.create(
            model=DEPLOYMENT,
            messages=USER_PROMPT,
            response_format=_json_schema_format(schema, "year"),
        )

    assert "pattern" in caught.value.message


async def test_fault_for_unknown_key_is_not_found(http: httpx.AsyncClient) -> None:
    response = await http.put("/_simulator/keys/north/fault", json={"kind": "revoked"})

    assert response.status_code == 404
    assert "north" in response.json()["error"]["message"]


async def test_invalid_fault_names_the_field(http: httpx.AsyncClient) -> None:
    response = await http.put("/_simulator/keys/east/fault", json={"kind": "flaky"})

    assert response.status_code == 400
    assert "kind" in response.json()["error"]["message"]


async def test_unknown_path_is_azure_not_found(http: httpx.AsyncClient) -> None:
    response = await http.get("/openai/models")

    assert response.status_code == 404
    assert response.json()["error"]["code"] == "404"


async def test_latency_delays_successful_calls() -> None:
    config = SimulatorConfig(keys=[SimulatedKey(name="slow", secret="slow")], latency_s=0.3)

    with SimulatorServer(config) as simulator:
        async with httpx.AsyncClient(base_url=simulator.openai_base_url) as http:
            response = await http.post(
                "/chat/completions",
                headers={"authorization": "Bearer slow"},
                json={"model": "m", "messages": USER_PROMPT},
            )

    assert response.status_code == 200
    assert response.elapsed.total_seconds() >= 0.3


async def test_seeded_replies_repeat_after_reset(
    azure_client: openai.AsyncAzureOpenAI, http: httpx.AsyncClient
) -> None:
    first = await azure_client.chat.completions.create(
        model=DEPLOYMENT, messages=USER_PROMPT, response_format=_model_format(TopicPlan)
    )
    await http.post("/_simulator/reset")

    second = await azure_client.chat.completions.create(
        model=DEPLOYMENT, messages=USER_PROMPT, response_format=_model_format(TopicPlan)
    )

    assert first.choices[0].message.content == second.choices[0].message.content


async def test_wrong_method_is_azure_error(http: httpx.AsyncClient) -> None:
    response = await http.get("/v1/chat/completions")

    assert response.status_code == 405
    assert response.json()["error"]["code"] == "405"
