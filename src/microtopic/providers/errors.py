"""Translate errors of the openai SDK into `UpstreamError`, at this one boundary.

The SDK's messages can quote the upstream body, so none of its text is kept in
the `reason`: each reason is written here, and the original exception stays
attached as `__cause__` for logs at debug level.
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import Mapping
from typing import Any

import openai

from microtopic.errors import (
    ContentFilteredError,
    RequestRejectedError,
    UpstreamAuthError,
    UpstreamBadRequestError,
    UpstreamConnectionError,
    UpstreamError,
    UpstreamRateLimitError,
    UpstreamServerError,
    UpstreamTimeoutError,
)

# Order matters: subclasses before their bases (APITimeoutError is an APIConnectionError).
_STATUS_ERRORS: tuple[tuple[type[openai.APIStatusError], type[UpstreamError], str], ...] = (
    (openai.AuthenticationError, UpstreamAuthError, "the key was rejected (401)"),
    (openai.PermissionDeniedError, UpstreamAuthError, "the key has no access (403)"),
    (openai.RateLimitError, UpstreamRateLimitError, "rate limited (429)"),
    (openai.NotFoundError, UpstreamBadRequestError, "deployment or model not found (404)"),
    (openai.BadRequestError, UpstreamBadRequestError, "the provider rejected the request (400)"),
    (openai.ConflictError, UpstreamServerError, "conflict at the provider (409)"),
    (openai.UnprocessableEntityError, UpstreamBadRequestError, "unprocessable request (422)"),
    (openai.InternalServerError, UpstreamServerError, "server error"),
)


def translate_openai_error(exc: openai.OpenAIError) -> UpstreamError:
    """Return the `UpstreamError` for an exception raised by the openai SDK."""
    if isinstance(exc, openai.APITimeoutError):
        return UpstreamTimeoutError("timed out waiting for the provider")
    if isinstance(exc, openai.APIConnectionError):
        return UpstreamConnectionError("could not connect to the provider")
    if isinstance(exc, openai.APIStatusError):
        return _translate_status_error(exc)
    if isinstance(exc, openai.APIResponseValidationError):
        return UpstreamServerError("the provider sent a malformed response")
    return UpstreamServerError(f"the openai client failed ({type(exc).__name__})")


def translate_passthrough_error(exc: openai.OpenAIError) -> UpstreamError:
    """Return the `UpstreamError` for an SDK exception raised while forwarding a client's body.

    A 400 or 422 then rejects the client's own body, so it becomes `RequestRejectedError`,
    which is not held against the key. A 404 still means our deployment is missing.
    """
    error = translate_openai_error(exc)
    if type(error) is UpstreamBadRequestError and error.status_code in (400, 422):
        return RequestRejectedError(
            f"the provider rejected the request body ({error.status_code})",
            status_code=error.status_code,
        )
    return error


def _translate_status_error(exc: openai.APIStatusError) -> UpstreamError:
    status = exc.status_code
    error_code = _error_code(exc.body)
    if error_code == "content_filter":
        return ContentFilteredError(
            f"the provider's content filter rejected the prompt ({status})",
            status_code=status,
            categories=filtered_categories(_inner_filter_result(exc.body)),
        )
    for sdk_class, upstream_class, reason in _STATUS_ERRORS:
        if not isinstance(exc, sdk_class):
            continue
        if upstream_class is UpstreamRateLimitError:
            return _rate_limit_error(exc, error_code)
        if upstream_class is UpstreamServerError and reason == "server error":
            reason = f"server error ({status})"
        return upstream_class(reason, status_code=status)
    if status >= 500:
        return UpstreamServerError(f"server error ({status})", status_code=status)
    return UpstreamBadRequestError(f"unexpected status {status}", status_code=status)


def _rate_limit_error(exc: openai.APIStatusError, error_code: str | None) -> UpstreamError:
    retry_after_s = parse_retry_after(exc.response.headers)
    if error_code == "insufficient_quota":
        return UpstreamRateLimitError(
            "the key's quota is used up (429 insufficient_quota)",
            status_code=exc.status_code,
            retry_after_s=retry_after_s,
            quota_exhausted=True,
        )
    return UpstreamRateLimitError(
        "rate limited (429)", status_code=exc.status_code, retry_after_s=retry_after_s
    )


def filtered_categories(results: Any) -> list[str]:
    """Return the content filter categories marked `filtered` in an Azure filter result.

    Azure sends `{"hate": {"filtered": true, "severity": "high"}, ...}`; anything
    else yields no categories.
    """
    if not isinstance(results, Mapping):
        return []
    return sorted(
        str(name)
        for name, verdict in results.items()
        if isinstance(verdict, Mapping) and verdict.get("filtered") is True
    )


def _error_code(body: object) -> str | None:
    # The SDK hands over the body's `error` object itself, or the whole body.
    if isinstance(body, Mapping) and isinstance(body.get("error"), Mapping):
        body = body["error"]
    if isinstance(body, Mapping) and isinstance(body.get("code"), str):
        return str(body["code"])
    return None


def _inner_filter_result(body: object) -> Any:
    if isinstance(body, Mapping) and isinstance(body.get("error"), Mapping):
        body = body["error"]
    if not isinstance(body, Mapping):
        return None
    inner = body.get("innererror")
    return inner.get("content_filter_result") if isinstance(inner, Mapping) else None


def parse_retry_after(headers: Mapping[str, str]) -> float | None:
    """Return the wait in seconds that a 429's headers ask for, or None.

    Azure OpenAI sends `retry-after-ms` and `x-ms-retry-after-ms` in milliseconds
    and `retry-after` in whole seconds, rounded up; RFC 9110 also allows an HTTP
    date there. The millisecond headers are the precise figure, so they win (the
    longer of the two if both are valid); `retry-after` is the fallback. Taking
    the rounded-up seconds instead would idle a key for up to a second per 429.
    """
    precise = [
        wait
        for name in ("retry-after-ms", "x-ms-retry-after-ms")
        if (value := headers.get(name)) is not None
        and (wait := _parse_number(value, scale=0.001)) is not None
    ]
    if precise:
        return max(precise)
    value = headers.get("retry-after")
    if value is None:
        return None
    seconds = _parse_number(value, scale=1.0)
    return seconds if seconds is not None else _parse_http_date(value)


def _parse_number(value: str, *, scale: float) -> float | None:
    try:
        number = float(value.strip())
    except ValueError:
        return None
    if number < 0 or number != number:  # negative or NaN
        return None
    return number * scale


def _parse_http_date(value: str) -> float | None:
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())
