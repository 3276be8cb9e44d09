"""Turn errors into JSON responses: one place, one body shape, a stable code.

Every error body is `{"success": false, "error": {"code", "message"}, "request_id"}`.
Messages are ours; an upstream exception's text or a traceback never reaches a client.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from microtopic.api.request_id import request_id_of
from microtopic.errors import (
    AllKeysFailedError,
    ConfigError,
    ContentFilteredError,
    DeadlineExceededError,
    DuplicateRequestError,
    GatewayError,
    InvalidApiKeyError,
    InvalidModelOutputError,
    MicrotopicError,
    NoKeyAvailableError,
    NotFoundError,
    PassthroughDisabledError,
    RequestRejectedError,
    ServiceAtCapacityError,
    StorageError,
    StreamingNotSupportedError,
    TruncatedOutputError,
    UpstreamError,
)

logger = logging.getLogger(__name__)

# Checked in order, so subclasses come before their bases.
STATUS_BY_ERROR: tuple[tuple[type[MicrotopicError], int], ...] = (
    (ServiceAtCapacityError, 503),
    (NoKeyAvailableError, 503),
    (DeadlineExceededError, 504),
    (AllKeysFailedError, 502),
    (GatewayError, 502),
    (ContentFilteredError, 422),
    (TruncatedOutputError, 502),
    (RequestRejectedError, 400),
    (UpstreamError, 502),
    (InvalidModelOutputError, 502),
    (StorageError, 503),
    (NotFoundError, 404),
    (DuplicateRequestError, 409),
    (InvalidApiKeyError, 401),
    (PassthroughDisabledError, 403),
    (StreamingNotSupportedError, 400),
    (ConfigError, 500),
)


def status_for(exc: MicrotopicError) -> int:
    """Return the HTTP status of a domain error."""
    for error_class, status in STATUS_BY_ERROR:
        if isinstance(exc, error_class):
            return status
    return 500


def error_details(exc: MicrotopicError) -> dict[str, Any]:
    """Return the fields an error adds to the body's `error` object besides code and message."""
    if isinstance(exc, AllKeysFailedError):
        attempts = [
            {"key_name": f.key_name, "error_code": f.error_code, "reason": f.reason}
            for f in exc.failures
        ]
        return {"attempts": attempts}
    if isinstance(exc, ContentFilteredError):
        return {"categories": exc.categories}
    if isinstance(exc, TruncatedOutputError):
        return {"max_tokens": exc.max_tokens}
    return {}


def error_headers(exc: MicrotopicError) -> dict[str, str]:
    """Return the response headers an error needs: `Retry-After`, `WWW-Authenticate`."""
    retry_after_s = None
    if isinstance(exc, ServiceAtCapacityError | NoKeyAvailableError):
        retry_after_s = exc.retry_after_s
    if retry_after_s is not None:
        # Retry-After takes a whole number of seconds, so the wait is rounded up.
        return {"Retry-After": str(max(1, math.ceil(retry_after_s)))}
    if isinstance(exc, InvalidApiKeyError):
        # HTTP requires a 401 to name, in WWW-Authenticate, the scheme that would succeed.
        return {"WWW-Authenticate": 'Bearer realm="microtopic"'}
    return {}


def error_body(request: Request, code: str, message: str, **extra: Any) -> dict[str, Any]:
    """Return the JSON body shared by every error response."""
    return {
        "success": False,
        "error": {"code": code, "message": message, **extra},
        "request_id": request_id_of(request),
    }


async def handle_domain_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, MicrotopicError)
    status = status_for(exc)
    logger.warning("request %s: %s (%s)", request_id_of(request), exc.code, exc.message)
    body = error_body(request, exc.code, exc.message, **error_details(exc))
    return JSONResponse(body, status_code=status, headers=error_headers(exc))


async def handle_validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    fields = [_describe(error) for error in exc.errors()]
    summary = "; ".join(f"{field['field']}: {field['message']}" for field in fields[:5])
    body = error_body(request, "invalid_request", f"Invalid request: {summary}.", fields=fields)
    return JSONResponse(body, status_code=422)


async def handle_unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    logger.exception("request %s failed unexpectedly", request_id_of(request), exc_info=exc)
    message = "An unexpected error occurred; the request id identifies it in the server logs."
    return JSONResponse(error_body(request, "internal_error", message), status_code=500)


def _describe(error: Any) -> dict[str, str]:
    # Drop the "body" prefix, and never echo the input: it may be 20 kB, or a secret.
    location = [str(part) for part in error.get("loc", ()) if part != "body"]
    if error.get("type") == "json_invalid":
        # FastAPI (0.165) puts the character offset of the syntax error where a field name goes.
        where = f"character {location[-1]}" if location else "an unknown position"
        return {"field": "body", "message": f"JSON decode error at {where}"}
    return {"field": ".".join(location) or "body", "message": str(error.get("msg", "invalid"))}


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers on `app`."""
    app.add_exception_handler(MicrotopicError, handle_domain_error)
    app.add_exception_handler(RequestValidationError, handle_validation_error)
    app.add_exception_handler(Exception, handle_unexpected_error)
