"""Translating every error of the openai SDK into an `UpstreamError`."""

from __future__ import annotations

import email.utils
import time

import httpx2
import openai
import pytest

from microtopic.errors import (
    UpstreamAuthError,
    UpstreamBadRequestError,
    UpstreamConnectionError,
    UpstreamError,
    UpstreamRateLimitError,
    UpstreamServerError,
    UpstreamTimeoutError,
)
from microtopic.providers.errors import parse_retry_after, translate_openai_error

# The openai SDK (3.x) is built on httpx2, so its errors carry httpx2 requests and responses.
REQUEST = httpx2.Request("POST", "http://127.0.0.1/openai/deployments/gpt-4o-mini/chat/completions")
# Upstream text that must never reach a reason: the SDK's message quotes the response body.
UPSTREAM_TEXT = "upstream body with sk-leaked-0123456789"


def response(status_code: int, headers: dict[str, str] | None = None) -> httpx2.Response:
    return httpx2.Response(status_code, headers=headers, request=REQUEST)


def status_error(
    error_class: type[openai.APIStatusError], status_code: int
) -> openai.APIStatusError:
    if issubclass(error_class, openai.OAuthError):
        # OAuthError writes its own message from the body.
        body = {"error": "invalid_client", "error_description": UPSTREAM_TEXT}
        return error_class(response=response(status_code), body=body)
    return error_class(UPSTREAM_TEXT, response=response(status_code), body={"error": {}})


STATUS_CASES: list[tuple[type[openai.APIStatusError], int, type[UpstreamError]]] = [
    (openai.AuthenticationError, 401, UpstreamAuthError),
    (openai.OAuthError, 401, UpstreamAuthError),
    (openai.PermissionDeniedError, 403, UpstreamAuthError),
    (openai.RateLimitError, 429, UpstreamRateLimitError),
    (openai.NotFoundError, 404, UpstreamBadRequestError),
    (openai.BadRequestError, 400, UpstreamBadRequestError),
    (openai.ConflictError, 409, UpstreamServerError),
    (openai.UnprocessableEntityError, 422, UpstreamBadRequestError),
    (openai.InternalServerError, 500, UpstreamServerError),
    (openai.InternalServerError, 502, UpstreamServerError),
    (openai.APIStatusError, 418, UpstreamBadRequestError),
    (openai.APIStatusError, 503, UpstreamServerError),
]


@pytest.mark.parametrize(
    ("error_class", "status_code", "expected_class"),
    STATUS_CASES,
    ids=[f"{case[0].__name__}-{case[1]}" for case in STATUS_CASES],
)
def test_status_error_is_translated(
    error_class: type[openai.APIStatusError],
    status_code: int,
    expected_class: type[UpstreamError],
) -> None:
    error = status_error(error_class, status_code)

    translated = translate_openai_error(error)

    assert type(translated) is expected_class
    assert translated.status_code == status_code
    assert UPSTREAM_TEXT not in translated.reason


@pytest.mark.parametrize(
    ("status_code", "expected_reason"),
    [(500, "server error (500)"), (503, "server error (503)"), (418, "unexpected status 418")],
)
def test_reason_names_status(status_code: int, expected_reason: str) -> None:
    error_class = openai.InternalServerError if status_code == 500 else openai.APIStatusError
    error = status_error(error_class, status_code)

    translated = translate_openai_error(error)

    assert translated.reason == expected_reason


def test_auth_errors_disable_the_key() -> None:
    errors = [
        status_error(openai.AuthenticationError, 401),
        status_error(openai.PermissionDeniedError, 403),
    ]

    translated = [translate_openai_error(error) for error in errors]

    assert [error.disables_key for error in translated] == [True, True]


def test_bad_request_is_not_retryable() -> None:
    error = status_error(openai.BadRequestError, 400)

    translated = translate_openai_error(error)

    assert not translated.retryable


def test_timeout_error_is_translated() -> None:
    error = openai.APITimeoutError(REQUEST)

    translated = translate_openai_error(error)

    assert type(translated) is UpstreamTimeoutError
    assert translated.status_code is None
    assert translated.retryable


def test_connection_error_is_translated() -> None:
    error = openai.APIConnectionError(message=UPSTREAM_TEXT, request=REQUEST)

    translated = translate_openai_error(error)

    assert type(translated) is UpstreamConnectionError
    assert UPSTREAM_TEXT not in translated.reason


def test_response_validation_error_is_translated() -> None:
    error = openai.APIResponseValidationError(response(200), body=None, message=UPSTREAM_TEXT)

    translated = translate_openai_error(error)

    assert type(translated) is UpstreamServerError
    assert translated.reason == "the provider sent a malformed response"


def test_other_sdk_error_names_its_class() -> None:
    error = openai.OpenAIError(UPSTREAM_TEXT)

    translated = translate_openai_error(error)

    assert type(translated) is UpstreamServerError
    assert translated.reason == "the openai client failed (OpenAIError)"


def test_every_status_subclass_is_in_table() -> None:
    subclasses = [
        cls
        for cls in _all_subclasses(openai.APIStatusError)
        if isinstance(getattr(cls, "status_code", None), int)
    ]

    generic = [
        cls.__name__
        for cls in subclasses
        if translate_openai_error(status_error(cls, cls.status_code)).reason.startswith(
            "unexpected status"
        )
    ]

    assert subclasses
    assert generic == []


def test_rate_limit_carries_retry_after() -> None:
    error = openai.RateLimitError(
        UPSTREAM_TEXT, response=response(429, {"retry-after-ms": "1500"}), body=None
    )

    translated = translate_openai_error(error)

    assert isinstance(translated, UpstreamRateLimitError)
    assert translated.retry_after_s == 1.5


def test_rate_limit_without_hint_has_none() -> None:
    error = status_error(openai.RateLimitError, 429)

    translated = translate_openai_error(error)

    assert isinstance(translated, UpstreamRateLimitError)
    assert translated.retry_after_s is None


@pytest.mark.parametrize(
    ("headers", "expected_s"),
    [
        ({"retry-after-ms": "1500"}, 1.5),
        ({"x-ms-retry-after-ms": "250"}, 0.25),
        ({"retry-after": "7"}, 7.0),
        ({"retry-after": "3", "retry-after-ms": "2500"}, 2.5),
        ({"retry-after": "3", "retry-after-ms": "1200", "x-ms-retry-after-ms": "900"}, 1.2),
        ({"retry-after": "soon", "retry-after-ms": "400"}, 0.4),
        ({"retry-after-ms": "-5", "retry-after": "1"}, 1.0),
        ({"retry-after-ms": "nan", "x-ms-retry-after-ms": "100"}, 0.1),
    ],
)
def test_retry_after_prefers_milliseconds(headers: dict[str, str], expected_s: float) -> None:
    wait_s = parse_retry_after(httpx2.Headers(headers))

    assert wait_s == pytest.approx(expected_s)


@pytest.mark.parametrize(
    "headers",
    [{}, {"retry-after": "soon"}, {"retry-after-ms": "-1"}, {"x-ms-retry-after-ms": "abc"}],
)
def test_retry_after_ignores_invalid_values(headers: dict[str, str]) -> None:
    wait_s = parse_retry_after(httpx2.Headers(headers))

    assert wait_s is None


def test_retry_after_reads_http_date() -> None:
    when = email.utils.formatdate(time.time() + 30, usegmt=True)

    wait_s = parse_retry_after(httpx2.Headers({"Retry-After": when}))

    assert wait_s is not None
    assert 28.0 <= wait_s <= 30.0


def test_retry_after_past_date_is_zero() -> None:
    when = email.utils.formatdate(time.time() - 60, usegmt=True)

    wait_s = parse_retry_after(httpx2.Headers({"retry-after": when}))

    assert wait_s == 0.0


def _all_subclasses(cls: type[openai.APIStatusError]) -> list[type[openai.APIStatusError]]:
    found = []
    for subclass in cls.__subclasses__():
        found.append(subclass)
        found.extend(_all_subclasses(subclass))
    return found
