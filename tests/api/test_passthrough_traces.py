"""Traces of forwarded calls: stored with their attempts, listed by kind, free of text.

The app runs under uvicorn with three keys served by the simulator, and clients
call it with the real openai SDK, as in test_passthrough.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from microtopic.api.routes import PREFIX
from microtopic.config import Settings, TracesConfig
from tests.api.support import (
    CLIENT_BODY,
    GENERATE_PATH,
    KEY_NAMES,
    SimulatorControl,
    count_rows,
    request_row,
    table_rows,
)
from tests.app_server import AppServer

GATEWAY_TOKEN = "gw-test-" + uuid.uuid4().hex
REQUESTS_PATH = f"{PREFIX}/requests"
PROMPT = "Explain what a linear equation is, in words no one else uses: " + uuid.uuid4().hex
MESSAGES: list[Any] = [
    {"role": "system", "content": "You answer in one short paragraph."},
    {"role": "user", "content": PROMPT},
]


@pytest.fixture
def gateway_api_keys() -> list[str]:
    return [GATEWAY_TOKEN]


@pytest.fixture
async def openai_client(app_server: AppServer) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(
        base_url=f"{app_server.base_url}/v1", api_key=GATEWAY_TOKEN, max_retries=0
    ) as client:
        yield client


async def forward(openai_client: openai.AsyncOpenAI, **headers: str) -> tuple[str, str]:
    """Send one forwarded call, and return its request id and the completion's text."""
    raw = await openai_client.chat.completions.with_raw_response.create(
        model="client-model", messages=MESSAGES, max_tokens=60, extra_headers=headers
    )
    completion = raw.parse()
    return raw.headers["X-Request-ID"], completion.choices[0].message.content or ""


async def get_trace(client: httpx.AsyncClient, request_id: str) -> dict[str, Any]:
    response = await client.get(f"{REQUESTS_PATH}/{request_id}/trace")
    assert response.status_code == 200, response.text
    trace: dict[str, Any] = response.json()
    return trace


def by_kind(trace: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [span for span in trace["spans"] if span["kind"] == kind]


async def test_trace_shows_failover_of_forwarded_call(
    openai_client: openai.AsyncOpenAI,
    client: httpx.AsyncClient,
    simulator_control: SimulatorControl,
) -> None:
    await simulator_control.set_fault("east", "revoked")

    request_id, _ = await forward(openai_client)

    trace = await get_trace(client, request_id)
    request = trace["request"]
    assert request["kind"] == "passthrough"
    assert request["status"] == "succeeded"
    assert request["requested_model"] == "client-model"
    assert request["max_tokens"] == 60
    assert request["message_count"] == 2
    assert request["topic_name"] is None
    assert request["failed_calls"] == 1
    (step,) = by_kind(trace, "step")
    assert step["name"] == "forward"
    failed, served = by_kind(trace, "llm_call")
    assert failed["attributes"]["key"] == "east"
    assert failed["attributes"]["attempt"] == 1
    assert failed["attributes"]["error"] == "upstream_auth_failed"
    assert served["attributes"]["key"] in ("west", "north")
    assert served["attributes"]["attempt"] == 2
    assert served["attributes"]["outcome"] == "success"
    assert served["attributes"]["prompt_tokens"] > 0
    assert {failed["parent_id"], served["parent_id"]} == {step["span_id"]}
    selections = by_kind(trace, "key_selection")
    assert [span["attributes"]["key"] for span in selections] == [
        "east",
        served["attributes"]["key"],
    ]
    assert [span["name"] for span in by_kind(trace, "validation")] == ["validate request"]
    assert trace["spans"][-1]["name"] == "store outcome"


async def test_list_filters_by_kind(
    openai_client: openai.AsyncOpenAI, client: httpx.AsyncClient
) -> None:
    generated = await client.post(GENERATE_PATH, json=CLIENT_BODY)
    generation_id = generated.json()["metadata"]["request_id"]
    forwarded_id, _ = await forward(openai_client)

    forwarded = await client.get(REQUESTS_PATH, params={"kind": "passthrough"})
    generations = await client.get(REQUESTS_PATH, params={"kind": "generation"})
    every = await client.get(REQUESTS_PATH)
    invalid = await client.get(REQUESTS_PATH, params={"kind": "chat"})

    assert [r["id"] for r in forwarded.json()["requests"]] == [forwarded_id]
    assert [r["id"] for r in generations.json()["requests"]] == [generation_id]
    assert [r["kind"] for r in every.json()["requests"]] == ["passthrough", "generation"]
    assert invalid.status_code == 422


async def test_stored_rows_hold_no_text_or_secret(
    openai_client: openai.AsyncOpenAI,
    client: httpx.AsyncClient,
    database_path: Path,
    key_secrets: dict[str, str],
) -> None:
    request_id, completion = await forward(openai_client)

    rows = json.dumps(table_rows(database_path), default=str)
    stored = request_row(database_path, request_id)

    assert stored is not None
    assert json.loads(stored["input"]) == {
        "model": "client-model",
        "max_tokens": 60,
        "message_count": 2,
    }
    assert count_rows(database_path, "llm_calls") == 1
    assert PROMPT not in rows
    assert "one short paragraph" not in rows
    assert completion
    assert completion not in rows
    assert GATEWAY_TOKEN not in rows
    for secret in key_secrets.values():
        assert secret not in rows


async def test_failed_call_is_stored_with_its_error(
    openai_client: openai.AsyncOpenAI,
    client: httpx.AsyncClient,
    simulator_control: SimulatorControl,
) -> None:
    for name in KEY_NAMES:
        await simulator_control.set_fault(name, "revoked")
    request_id = "failed-forward-" + uuid.uuid4().hex[:8]

    with pytest.raises(openai.APIStatusError):
        await forward(openai_client, **{"X-Request-ID": request_id})

    trace = await get_trace(client, request_id)
    assert trace["request"]["status"] == "failed"
    assert trace["request"]["error_code"] == "all_keys_failed"
    assert [call["attributes"]["key"] for call in by_kind(trace, "llm_call")] == list(KEY_NAMES)


async def test_reused_request_id_still_gets_completion(
    openai_client: openai.AsyncOpenAI, client: httpx.AsyncClient, database_path: Path
) -> None:
    request_id = "reused-" + uuid.uuid4().hex[:8]
    await forward(openai_client, **{"X-Request-ID": request_id})

    # The second call's row conflicts with the first one's, so storing it fails.
    _, completion = await forward(openai_client, **{"X-Request-ID": request_id})

    assert completion
    assert count_rows(database_path, "generation_requests") == 1
    assert count_rows(database_path, "llm_calls") == 1


async def test_disconnected_call_is_stored_as_cancelled(
    app_server: AppServer, client: httpx.AsyncClient, simulator_control: SimulatorControl
) -> None:
    for name in KEY_NAMES:
        await simulator_control.set_fault(name, "hang")
    request_id = "hung-" + uuid.uuid4().hex[:8]
    body = {"model": "any", "messages": [{"role": "user", "content": "Hello"}]}
    headers = {"Authorization": f"Bearer {GATEWAY_TOKEN}", "X-Request-ID": request_id}

    async with httpx.AsyncClient(base_url=app_server.base_url, timeout=1.0) as http:
        with pytest.raises(httpx.ReadTimeout):
            await http.post("/v1/chat/completions", json=body, headers=headers)
    response = await client.get(f"{REQUESTS_PATH}/{request_id}/trace")
    for _ in range(100):
        if response.status_code == 200:
            break
        await asyncio.sleep(0.05)
        response = await client.get(f"{REQUESTS_PATH}/{request_id}/trace")

    assert response.status_code == 200
    request = response.json()["request"]
    assert request["status"] == "failed"
    assert request["error_code"] == "cancelled"


class TestStoringOff:
    @pytest.fixture
    def settings(self, settings: Settings) -> Settings:
        return settings.model_copy(update={"traces": TracesConfig(store_passthrough=False)})

    async def test_forwarded_call_leaves_no_rows(
        self, openai_client: openai.AsyncOpenAI, client: httpx.AsyncClient, database_path: Path
    ) -> None:
        request_id, completion = await forward(openai_client)

        response = await client.get(f"{REQUESTS_PATH}/{request_id}/trace")

        assert completion
        assert response.status_code == 404
        for table in ("generation_requests", "llm_calls", "trace_spans"):
            assert count_rows(database_path, table) == 0
