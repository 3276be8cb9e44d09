"""Error responses over HTTP: one body shape, a stable code, the request id, nothing upstream."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from microtopic.api.body import MAX_BODY_BYTES
from microtopic.api.errors import error_details, error_headers, status_for
from microtopic.config import GatewayConfig
from microtopic.errors import (
    AllKeysRateLimitedError,
    CallExceedsQuotaError,
    CourseFileError,
    IdempotencyKeyConflictError,
    KeyFailure,
    LeaseLostError,
    QueueUnavailableError,
)
from tests.api.support import (
    CLIENT_BODY,
    FAST_GATEWAY,
    GENERATE_PATH,
    KEY_NAMES,
    SimulatorControl,
    count_rows,
    request_row,
)

LONG_TOPIC = "x" * 20_000

# Text of the simulator's own error bodies, which must never reach a client.
UPSTREAM_MARKERS = ("Access denied", "simulated fault", "InternalServerError")


def without(field: str) -> dict[str, Any]:
    return {name: value for name, value in CLIENT_BODY.items() if name != field}


INVALID_BODIES = [
    pytest.param({**CLIENT_BODY, "topic_name": ""}, "topic_name", id="empty-topic"),
    pytest.param({**CLIENT_BODY, "topic_name": " \t "}, "topic_name", id="whitespace-topic"),
    pytest.param({**CLIENT_BODY, "topic_name": LONG_TOPIC}, "topic_name", id="20kB-topic"),
    pytest.param({**CLIENT_BODY, "subject_name": 42}, "subject_name", id="number-subject"),
    pytest.param(without("course_id"), "course_id", id="missing-course"),
    pytest.param({**CLIENT_BODY, "lesson_plan": "mine"}, "lesson_plan", id="unknown-field"),
    pytest.param({**CLIENT_BODY, "is_retry": "yes"}, "is_retry", id="string-is-retry"),
    pytest.param({**CLIENT_BODY, "is_retry": 1}, "is_retry", id="number-is-retry"),
    *(
        pytest.param({**CLIENT_BODY, field: "Alge\x00bra"}, field, id=f"nul-{field}")
        for field in ("course_id", "subject_name", "topic_name", "audience")
    ),
    pytest.param({**CLIENT_BODY, "topic_name": "Alge\nbra"}, "topic_name", id="newline-topic"),
    pytest.param({**CLIENT_BODY, "language": "en\x00"}, "language", id="nul-language"),
    pytest.param(
        {**CLIENT_BODY, "microtopics": ["Slope", "Inter\x1bcepts"]},
        "microtopics.1",
        id="escape-microtopic",
    ),
]


def assert_error_shape(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status
    body: dict[str, Any] = response.json()
    assert body["success"] is False
    assert body["error"]["code"] == code
    assert body["error"]["message"]
    assert body["request_id"] == response.headers["X-Request-ID"]
    assert "Traceback" not in response.text
    for marker in UPSTREAM_MARKERS:
        assert marker not in response.text
    return body


@pytest.mark.parametrize(("body", "field"), INVALID_BODIES)
async def test_invalid_body_names_field(
    client: httpx.AsyncClient, database_path: Path, body: dict[str, Any], field: str
) -> None:
    response = await client.post(GENERATE_PATH, json=body)

    error = assert_error_shape(response, 422, "invalid_request")["error"]
    assert [item["field"] for item in error["fields"]] == [field]
    assert field in error["message"]
    assert count_rows(database_path, "generation_requests") == 0
    assert count_rows(database_path, "generated_topics") == 0


# JSON escapes of lone UTF-16 surrogates, which are not Unicode text and which PostgreSQL
# could not store. The body is sent as raw bytes, because a client library would not
# encode such a string.
LONE_SURROGATES = [
    pytest.param("topic_name", '"Alge\\ud800bra"', "topic_name", id="high-topic"),
    pytest.param("subject_name", '"\\udc00"', "subject_name", id="low-subject"),
    pytest.param("course_id", '"a\\udfffb"', "course_id", id="low-course"),
    pytest.param("audience", '"grade \\ud83d"', "audience", id="high-audience"),
    pytest.param("language", '"en\\ud800"', "language", id="high-language"),
    pytest.param("microtopics", '["Slope", "\\ud800"]', "microtopics.1", id="microtopic"),
]


@pytest.mark.parametrize(("name", "json_value", "field"), LONE_SURROGATES)
async def test_lone_surrogate_names_field(
    client: httpx.AsyncClient, database_path: Path, name: str, json_value: str, field: str
) -> None:
    fields = {**CLIENT_BODY, name: None}
    content = json.dumps(fields).replace("null", json_value).encode("ascii")

    response = await client.post(
        GENERATE_PATH, content=content, headers={"Content-Type": "application/json"}
    )

    error = assert_error_shape(response, 422, "invalid_request")["error"]
    assert [item["field"] for item in error["fields"]] == [field]
    assert count_rows(database_path, "generation_requests") == 0


async def test_escaped_nul_names_field(client: httpx.AsyncClient, database_path: Path) -> None:
    content = b'{"course_id": "test", "subject_name": "Math", "topic_name": "Alge\\u0000bra"}'

    response = await client.post(
        GENERATE_PATH, content=content, headers={"Content-Type": "application/json"}
    )

    error = assert_error_shape(response, 422, "invalid_request")["error"]
    assert [item["field"] for item in error["fields"]] == ["topic_name"]
    assert "U+0000" in error["message"]
    assert count_rows(database_path, "generation_requests") == 0


async def test_escaped_bidi_override_names_field(
    client: httpx.AsyncClient, database_path: Path
) -> None:
    content = b'{"course_id": "test", "subject_name": "Math\\u202e", "topic_name": "Algebra"}'

    response = await client.post(
        GENERATE_PATH, content=content, headers={"Content-Type": "application/json"}
    )

    error = assert_error_shape(response, 422, "invalid_request")["error"]
    assert [item["field"] for item in error["fields"]] == ["subject_name"]
    assert "U+202E at index 4" in error["message"]
    assert count_rows(database_path, "generation_requests") == 0


async def test_surrogate_pair_is_valid(client: httpx.AsyncClient) -> None:
    # The pair that encodes U+1F9EE, the abacus emoji.
    pair = b'"Algebra \\ud83e\\uddee"'
    content = b'{"course_id": "test", "subject_name": "Math", "topic_name": ' + pair + b"}"

    response = await client.post(
        GENERATE_PATH, content=content, headers={"Content-Type": "application/json"}
    )

    assert response.status_code == 200
    assert response.json()["data"]["topic_name"] == "Algebra 🧮"


async def test_malformed_json_is_invalid(client: httpx.AsyncClient, database_path: Path) -> None:
    response = await client.post(
        GENERATE_PATH,
        content=b'{"course_id": "test", "subject_name": ',
        headers={"Content-Type": "application/json"},
    )

    error = assert_error_shape(response, 422, "invalid_request")["error"]
    assert [item["field"] for item in error["fields"]] == ["body"]
    assert "JSON" in error["fields"][0]["message"]
    assert count_rows(database_path, "generation_requests") == 0


async def test_long_input_is_not_echoed(client: httpx.AsyncClient) -> None:
    response = await client.post(GENERATE_PATH, json={**CLIENT_BODY, "topic_name": LONG_TOPIC})

    assert response.status_code == 422
    assert "x" * 201 not in response.text
    assert len(response.content) < 1000


async def test_all_keys_revoked_is_bad_gateway(
    client: httpx.AsyncClient,
    simulator_control: SimulatorControl,
    key_secrets: dict[str, str],
    database_path: Path,
) -> None:
    for name in KEY_NAMES:
        await simulator_control.set_fault(name, "revoked")

    response = await client.post(GENERATE_PATH, json=CLIENT_BODY)

    error = assert_error_shape(response, 502, "all_keys_failed")["error"]
    assert sorted(attempt["key_name"] for attempt in error["attempts"]) == sorted(KEY_NAMES)
    assert {attempt["error_code"] for attempt in error["attempts"]} == {"upstream_auth_failed"}
    for secret in key_secrets.values():
        assert secret not in response.text
        assert secret[-12:] not in response.text


async def test_failed_request_is_stored_failed(
    client: httpx.AsyncClient, simulator_control: SimulatorControl, database_path: Path
) -> None:
    for name in KEY_NAMES:
        await simulator_control.set_fault(name, "revoked")

    response = await client.post(GENERATE_PATH, json=CLIENT_BODY)

    row = request_row(database_path, response.json()["request_id"])
    assert row is not None
    assert row["status"] == "failed"
    assert row["error_code"] == "all_keys_failed"
    assert row["finished_at"] is not None
    assert count_rows(database_path, "generated_topics") == 0
    assert count_rows(database_path, "llm_calls") == len(KEY_NAMES)


async def test_all_keys_disabled_is_unavailable(
    client: httpx.AsyncClient, simulator_control: SimulatorControl, database_path: Path
) -> None:
    for name in KEY_NAMES:
        await simulator_control.set_fault(name, "revoked")
    await client.post(GENERATE_PATH, json=CLIENT_BODY)

    response = await client.post(GENERATE_PATH, json=CLIENT_BODY)

    body = assert_error_shape(response, 503, "no_key_available")
    assert "attempts" not in body["error"]
    # No disabled key returns by itself, so there is no time to retry after.
    assert "Retry-After" not in response.headers
    row = request_row(database_path, body["request_id"])
    assert row is not None
    assert row["status"] == "failed"
    assert row["error_code"] == "no_key_available"
    assert count_rows(database_path, "generated_topics") == 0


async def test_server_errors_are_bad_gateway(
    client: httpx.AsyncClient, simulator_control: SimulatorControl, database_path: Path
) -> None:
    for name in KEY_NAMES:
        await simulator_control.set_fault(name, "server_error")

    response = await client.post(GENERATE_PATH, json=CLIENT_BODY)

    error = assert_error_shape(response, 502, "all_keys_failed")["error"]
    assert len(error["attempts"]) == 3
    assert {attempt["error_code"] for attempt in error["attempts"]} == {"upstream_server_error"}
    assert count_rows(database_path, "generated_topics") == 0


async def test_keys_recover_after_server_errors(
    client: httpx.AsyncClient, simulator_control: SimulatorControl
) -> None:
    for name in KEY_NAMES:
        await simulator_control.set_fault(name, "server_error", count=1)
    failed = await client.post(GENERATE_PATH, json=CLIENT_BODY)

    response = await client.post(GENERATE_PATH, json=CLIENT_BODY)

    assert failed.status_code == 502
    assert response.status_code == 200


@pytest.mark.parametrize(
    ("fault", "category"),
    [("content_filter_prompt", "hate"), ("content_filter_completion", "violence")],
)
async def test_content_filter_is_unprocessable(
    client: httpx.AsyncClient,
    simulator_control: SimulatorControl,
    database_path: Path,
    fault: str,
    category: str,
) -> None:
    for name in KEY_NAMES:
        await simulator_control.set_fault(name, fault, category=category)

    response = await client.post(GENERATE_PATH, json=CLIENT_BODY)

    error = assert_error_shape(response, 422, "content_filtered")["error"]
    assert error["categories"] == [category]
    # Every key would refuse it too, so the first refusal ends the request.
    assert count_rows(database_path, "llm_calls") == 1


async def test_twice_truncated_reply_is_bad_gateway(
    client: httpx.AsyncClient, simulator_control: SimulatorControl, database_path: Path
) -> None:
    for name in KEY_NAMES:
        await simulator_control.set_fault(name, "truncated")

    response = await client.post(GENERATE_PATH, json=CLIENT_BODY)

    error = assert_error_shape(response, 502, "truncated_output")["error"]
    assert error["max_tokens"] > 0
    assert str(error["max_tokens"]) in error["message"]
    # The first cut-off reply is retried once with more tokens.
    assert count_rows(database_path, "llm_calls") == 2


class TestDeadline:
    """A deadline of half a second and keys that never reply."""

    @pytest.fixture
    def gateway_config(self) -> GatewayConfig:
        return FAST_GATEWAY.model_copy(update={"request_deadline_s": 0.5})

    async def test_passed_deadline_is_gateway_timeout(
        self, client: httpx.AsyncClient, simulator_control: SimulatorControl
    ) -> None:
        for name in KEY_NAMES:
            await simulator_control.set_fault(name, "hang")

        response = await client.post(GENERATE_PATH, json=CLIENT_BODY)

        error = assert_error_shape(response, 504, "deadline_exceeded")["error"]
        assert "request_deadline_s" in error["message"]


class TestCoolingKeys:
    """Every key returns 429 with a 60 s retry-after, longer than the 5 s deadline."""

    @pytest.fixture
    def gateway_config(self) -> GatewayConfig:
        return FAST_GATEWAY.model_copy(update={"request_deadline_s": 5.0})

    async def test_no_key_before_deadline_sets_retry_after(
        self, client: httpx.AsyncClient, simulator_control: SimulatorControl
    ) -> None:
        for name in KEY_NAMES:
            await simulator_control.set_fault(name, "rate_limit", retry_after_s=60)
        rate_limited = await client.post(GENERATE_PATH, json=CLIENT_BODY)

        response = await client.post(GENERATE_PATH, json=CLIENT_BODY)

        assert_error_shape(rate_limited, 503, "all_keys_rate_limited")
        assert 55 <= int(rate_limited.headers["Retry-After"]) <= 60
        error = assert_error_shape(response, 503, "no_key_available")["error"]
        assert 55 <= int(response.headers["Retry-After"]) <= 60
        assert "3 cooling" in error["message"]


class TestAtCapacity:
    """One slot, no queue and slow replies: the parallel writers of one topic find it full."""

    @pytest.fixture
    def gateway_config(self) -> GatewayConfig:
        return GatewayConfig(max_concurrent_requests=1, max_queue_size=0)

    @pytest.fixture
    def simulator_latency_s(self) -> float:
        return 0.3

    async def test_full_gateway_is_unavailable(
        self, client: httpx.AsyncClient, database_path: Path
    ) -> None:
        response = await client.post(GENERATE_PATH, json=CLIENT_BODY)

        assert_error_shape(response, 503, "service_at_capacity")
        assert response.headers["Retry-After"] == "1"
        assert count_rows(database_path, "generated_topics") == 0


async def test_unknown_route_is_not_found(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/v1/microtopic-content/lessons")

    error = assert_error_shape(response, 404, "not_found")["error"]
    assert "GET /api/v1/microtopic-content/lessons" in error["message"]
    assert "detail" not in response.json()


async def test_wrong_method_is_not_allowed(client: httpx.AsyncClient) -> None:
    response = await client.get(GENERATE_PATH)

    error = assert_error_shape(response, 405, "method_not_allowed")["error"]
    assert response.headers["Allow"] == "POST"
    assert error["message"] == f"GET is not allowed on {GENERATE_PATH}; use POST."


async def test_long_unknown_path_is_cut(client: httpx.AsyncClient) -> None:
    response = await client.get("/" + "x" * 5000)

    assert_error_shape(response, 404, "not_found")
    assert "x" * 101 not in response.text


async def test_deeply_nested_json_is_invalid(
    client: httpx.AsyncClient, database_path: Path
) -> None:
    depth = 100_000
    nested = b"[" * depth + b"]" * depth

    response = await client.post(
        GENERATE_PATH, content=nested, headers={"Content-Type": "application/json"}
    )

    error = assert_error_shape(response, 422, "invalid_request")["error"]
    assert "nested too deeply" in error["message"]
    assert count_rows(database_path, "generation_requests") == 0


@pytest.mark.parametrize(
    ("content_type", "named"),
    [
        ("text/plain", "Content-Type text/plain"),
        ("application/x-www-form-urlencoded", "Content-Type application/x-www-form-urlencoded"),
        (None, "no Content-Type"),
    ],
)
async def test_body_not_sent_as_json_is_unsupported(
    client: httpx.AsyncClient, database_path: Path, content_type: str | None, named: str
) -> None:
    headers = {} if content_type is None else {"Content-Type": content_type}

    response = await client.post(GENERATE_PATH, content=json.dumps(CLIENT_BODY), headers=headers)

    error = assert_error_shape(response, 415, "unsupported_media_type")["error"]
    assert "Content-Type: application/json" in error["message"]
    assert named in error["message"]
    assert count_rows(database_path, "generation_requests") == 0


async def test_json_with_charset_is_accepted(client: httpx.AsyncClient) -> None:
    response = await client.post(
        GENERATE_PATH,
        content=json.dumps(CLIENT_BODY),
        headers={"Content-Type": "application/json; charset=utf-8"},
    )

    assert response.status_code == 200


async def test_large_body_is_too_large(client: httpx.AsyncClient, database_path: Path) -> None:
    body = {**CLIENT_BODY, "topic_name": "x" * (MAX_BODY_BYTES + 1)}

    response = await client.post(GENERATE_PATH, json=body)

    error = assert_error_shape(response, 413, "request_too_large")["error"]
    assert f"{MAX_BODY_BYTES} bytes (1 MiB)" in error["message"]
    assert count_rows(database_path, "generation_requests") == 0


async def test_chunked_large_body_is_too_large(client: httpx.AsyncClient) -> None:
    chunk = b" " * 65_536

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(MAX_BODY_BYTES // len(chunk) + 2):
            yield chunk

    response = await client.post(
        GENERATE_PATH, content=chunks(), headers={"Content-Type": "application/json"}
    )

    assert_error_shape(response, 413, "request_too_large")
    assert "Content-Length" not in response.request.headers


def test_all_rate_limited_is_503() -> None:
    error = AllKeysRateLimitedError(
        [KeyFailure("east", "upstream_rate_limited", "rate limited (429)")], retry_after_s=2.2
    )

    assert status_for(error) == 503
    assert error_headers(error) == {"Retry-After": "3"}


def test_call_exceeding_every_window_is_422() -> None:
    error = CallExceedsQuotaError("too large", tokens=5_000, largest_window=2_000)

    assert status_for(error) == 422
    assert error_details(error) == {"tokens": 5_000, "largest_window": 2_000}


def test_idempotency_conflict_is_409_with_job() -> None:
    error = IdempotencyKeyConflictError("Used.", idempotency_key="k", job_id="j" * 32)

    assert status_for(error) == 409
    assert error_details(error) == {"job_id": "j" * 32}


def test_invalid_course_is_422_with_problems() -> None:
    error = CourseFileError("Invalid.", problems=["subjects[0].name: Field required"])

    assert status_for(error) == 422
    assert error_details(error) == {"problems": ["subjects[0].name: Field required"]}


def test_lease_lost_is_409() -> None:
    assert status_for(LeaseLostError("Lost.", item_id="i", attempt=1)) == 409


def test_queue_unavailable_is_503() -> None:
    assert status_for(QueueUnavailableError("Down.", backend="Redis")) == 503
