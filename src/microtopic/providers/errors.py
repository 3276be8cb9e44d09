"""Translate errors of the openai SDK into `UpstreamError`, at this one boundary.

The SDK's messages can quote the upstream body, so none of its text is kept in
the `reason`: each reason is written here, and the original exception stays
attached as `__cause__` for logs at debug level.
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import Mapping

import openai

from microtopic.errors import (
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


def _translate_status_error(exc: openai.APIStatusError) -> UpstreamError:
    status = exc.status_code
    for sdk_class, upstream_class, reason in _STATUS_ERRORS:
        if not isinstance(exc, sdk_class):
            continue
        if upstream_class is UpstreamRateLimitError:
            return UpstreamRateLimitError(
                reason, status_code=status, retry_after_s=parse_retry_after(exc.response.headers)
            )
        if upstream_class is UpstreamServerError and reason == "server error":
            reason = f"server error ({status})"
        return upstream_class(reason, status_code=status)
    if status >= 500:
        return UpstreamServerError(f"server error ({status})", status_code=status)
    return UpstreamBadRequestError(f"unexpected status {status}", status_code=status)


def parse_retry_after(headers: Mapping[str, str]) -> float | None:
    """Return the wait in seconds that a 429's headers ask for, or None.

    Azure OpenAI sends `retry-after-ms` and `x-ms-retry-after-ms` in milliseconds
    and `retry-after` in whole seconds; RFC 9110 also allows an HTTP date there.
    The longest wait wins when several are present.
    """
    waits = []
    for name in ("retry-after-ms", "x-ms-retry-after-ms"):
        value = headers.get(name)
        if value is not None:
            waits.append(_parse_number(value, scale=0.001))
    value = headers.get("retry-after")
    if value is not None:
        seconds = _parse_number(value, scale=1.0)
        waits.append(seconds if seconds is not None else _parse_http_date(value))
    found = [wait for wait in waits if wait is not None]
    return max(found) if found else None


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
