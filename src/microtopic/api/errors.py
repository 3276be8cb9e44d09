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
    DuplicateRequestError,
    GatewayError,
    InvalidModelOutputError,
    MicrotopicError,
    NoKeyAvailableError,
    NotFoundError,
    ServiceAtCapacityError,
    StorageError,
    UpstreamError,
)

logger = logging.getLogger(__name__)

# Checked in order, so subclasses come before their bases.
STATUS_BY_ERROR: tuple[tuple[type[MicrotopicError], int], ...] = (
    (ServiceAtCapacityError, 503),
    (NoKeyAvailableError, 503),
    (AllKeysFailedError, 502),
    (GatewayError, 502),
    (UpstreamError, 502),
    (InvalidModelOutputError, 502),
    (StorageError, 503),
    (NotFoundError, 404),
    (DuplicateRequestError, 409),
    (ConfigError, 500),
)


def status_for(exc: MicrotopicError) -> int:
    """Return the HTTP status of a domain error."""
    for error_class, status in STATUS_BY_ERROR:
        if isinstance(exc, error_class):
            return status
    return 500


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
    extra: dict[str, Any] = {}
    headers: dict[str, str] = {}
    if isinstance(exc, AllKeysFailedError):
        extra["attempts"] = [
            {"key_name": f.key_name, "error_code": f.error_code, "reason": f.reason}
            for f in exc.failures
        ]
    if isinstance(exc, ServiceAtCapacityError):
        headers["Retry-After"] = str(max(1, math.ceil(exc.retry_after_s)))
    logger.warning("request %s: %s (%s)", request_id_of(request), exc.code, exc.message)
    body = error_body(request, exc.code, exc.message, **extra)
    return JSONResponse(body, status_code=status, headers=headers)


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
