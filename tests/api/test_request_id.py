"""The X-Request-ID header: returned on every response, kept from the client when valid."""

from __future__ import annotations

import uuid
from pathlib import Path

import httpx
import pytest

from tests.api.support import CLIENT_BODY, GENERATE_PATH, request_row


async def test_header_matches_metadata_request_id(client: httpx.AsyncClient) -> None:
    response = await client.post(GENERATE_PATH, json=CLIENT_BODY)

    assert response.status_code == 200
    assert response.headers["X-Request-ID"] == response.json()["metadata"]["request_id"]


async def test_client_request_id_is_kept(client: httpx.AsyncClient, database_path: Path) -> None:
    request_id = "client-" + uuid.uuid4().hex[:12]

    response = await client.post(
        GENERATE_PATH, json=CLIENT_BODY, headers={"X-Request-ID": request_id}
    )

    assert response.status_code == 200
    assert response.headers["X-Request-ID"] == request_id
    assert response.json()["metadata"]["request_id"] == request_id
    row = request_row(database_path, request_id)
    assert row is not None
    assert row["status"] == "succeeded"


async def test_invalid_request_id_is_replaced(client: httpx.AsyncClient) -> None:
    sent = "not valid!" + "x" * 100

    response = await client.get("/healthz", headers={"X-Request-ID": sent})

    returned = response.headers["X-Request-ID"]
    assert returned != sent
    assert len(returned) == 32
    assert sent not in response.text


async def test_request_id_longer_than_column_is_replaced(client: httpx.AsyncClient) -> None:
    sent = "a" * 33

    response = await client.get("/healthz", headers={"X-Request-ID": sent})

    assert response.headers["X-Request-ID"] != sent


@pytest.mark.parametrize("sent", [".", "..", "-._"])
async def test_request_id_without_alphanumerics_is_replaced(
    client: httpx.AsyncClient, sent: str
) -> None:
    response = await client.get("/healthz", headers={"X-Request-ID": sent})

    assert response.headers["X-Request-ID"] != sent
    assert len(response.headers["X-Request-ID"]) == 32


async def test_error_body_carries_request_id(client: httpx.AsyncClient) -> None:
    response = await client.post(
        GENERATE_PATH, json={**CLIENT_BODY, "topic_name": ""}, headers={"X-Request-ID": "bad-1"}
    )

    assert response.status_code == 422
    assert response.headers["X-Request-ID"] == "bad-1"
    assert response.json()["request_id"] == "bad-1"


async def test_reused_request_id_is_conflict(
    client: httpx.AsyncClient, database_path: Path
) -> None:
    headers = {"X-Request-ID": "reused-" + uuid.uuid4().hex[:12]}
    first = await client.post(GENERATE_PATH, json=CLIENT_BODY, headers=headers)

    second = await client.post(GENERATE_PATH, json=CLIENT_BODY, headers=headers)

    assert first.status_code == 200
    assert second.status_code == 409
    assert second.json()["error"]["code"] == "duplicate_request_id"
    row = request_row(database_path, headers["X-Request-ID"])
    assert row is not None
    assert row["status"] == "succeeded"
