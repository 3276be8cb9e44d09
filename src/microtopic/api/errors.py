"""Turn errors into JSON responses: one place, one body shape, a stable code.

Every error body is `{"success": false, "error": {"code", "message"}, "request_id"}`.
Messages are ours; an upstream exception's text or a traceback never reaches a client.

Three kinds of error are handled: our domain errors (`STATUS_BY_ERROR`), invalid
request bodies (`invalid_request`), and errors of HTTP itself that the framework or
`api.body` raises as starlette's `HTTPException`, such as an unknown route
(`HTTP_ERRORS`). The framework's own text for those (`{"detail": "Not Found"}`)
never reaches a client either.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from microtopic.api.body import RequestBodyTooLargeError
from microtopic.api.request_id import request_id_of
from microtopic.errors import (
    AllKeysFailedError,
    AllKeysRateLimitedError,
    CallExceedsQuotaError,
    ClientDisconnectedError,
    ConfigError,
    ContentFilteredError,
    CourseFileError,
    DeadlineExceededError,
    DuplicateRequestError,
    GatewayError,
    IdempotencyKeyConflictError,
    InvalidApiKeyError,
    InvalidModelOutputError,
    LeaseLostError,
    MicrotopicError,
    NoKeyAvailableError,
    NotFoundError,
    PassthroughDisabledError,
    QueueUnavailableError,
    RedisUnavailableError,
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
    (CallExceedsQuotaError, 422),
    (AllKeysRateLimitedError, 503),
    (AllKeysFailedError, 502),
    (GatewayError, 502),
    (ContentFilteredError, 422),
    (TruncatedOutputError, 502),
    (RequestRejectedError, 400),
    (UpstreamError, 502),
    (InvalidModelOutputError, 502),
    (StorageError, 503),
    (RedisUnavailableError, 503),
    (NotFoundError, 404),
    (DuplicateRequestError, 409),
    (IdempotencyKeyConflictError, 409),
    (LeaseLostError, 409),
    (CourseFileError, 422),
    (QueueUnavailableError, 503),
    # 499, as nginx logs it: the client is gone, but access logs show why the request ended.
    (ClientDisconnectedError, 499),
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


# Request text quoted in a message is cut to this many characters.
MAX_QUOTED_CHARS = 100


def _unparsable_body(request: Request, exc: HTTPException) -> str:
    # FastAPI (0.165) raises 400 when reading or parsing the body fails other than by a
    # JSON syntax error, which it reports as a validation error: for example, nesting
    # deeper than Python's recursion limit, or bytes that are not UTF-8.
    if isinstance(exc.__cause__, RecursionError):
        return "The request body is JSON nested too deeply to parse. Send fewer levels of nesting."
    return "The request body could not be parsed as JSON. Send a JSON object."


def _no_route(request: Request, exc: HTTPException) -> str:
    return (
        f"No route matches {request.method} {_quoted_path(request)}. "
        "The README lists the service's routes."
    )


def _method_not_allowed(request: Request, exc: HTTPException) -> str:
    allowed = (exc.headers or {}).get("Allow", "another method")
    return f"{request.method} is not allowed on {_quoted_path(request)}; use {allowed}."


def _body_too_large(request: Request, exc: HTTPException) -> str:
    if not isinstance(exc, RequestBodyTooLargeError):
        return "The request body is larger than this route accepts."
    limit = f"{exc.max_bytes} bytes ({exc.max_bytes / 2**20:g} MiB)"
    return f"The request body is larger than this route's limit of {limit}."


def _not_json(request: Request, exc: HTTPException) -> str:
    received = request.headers.get("content-type")
    sent = "no Content-Type" if received is None else f"Content-Type {_quoted(received)}"
    return (
        f"The request body must be JSON, sent with `Content-Type: application/json`, "
        f"but it came with {sent}."
    )


def _other_http_error(request: Request, exc: HTTPException) -> str:
    return f"The request failed with HTTP status {exc.status_code}."


def _quoted_path(request: Request) -> str:
    return _quoted(request.url.path)


def _quoted(text: str) -> str:
    if len(text) <= MAX_QUOTED_CHARS:
        return text
    return text[:MAX_QUOTED_CHARS] + "…"


# Status raised, then the status and code sent and the message's builder. A body that
# cannot be parsed is sent as 422 like every other invalid body, so `invalid_request`
# always comes with 422.
HTTP_ERRORS: dict[int, tuple[int, str, Callable[[Request, HTTPException], str]]] = {
    400: (422, "invalid_request", _unparsable_body),
    404: (404, "not_found", _no_route),
    405: (405, "method_not_allowed", _method_not_allowed),
    413: (413, "request_too_large", _body_too_large),
    415: (415, "unsupported_media_type", _not_json),
}


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
    if isinstance(exc, CallExceedsQuotaError):
        return {"tokens": exc.tokens, "largest_window": exc.largest_window}
    if isinstance(exc, IdempotencyKeyConflictError):
        return {"job_id": exc.job_id}
    if isinstance(exc, CourseFileError):
        return {"problems": exc.problems}
    return {}


def error_headers(exc: MicrotopicError) -> dict[str, str]:
    """Return the response headers an error needs: `Retry-After`, `WWW-Authenticate`."""
    retry_after_s = None
    if isinstance(exc, ServiceAtCapacityError | NoKeyAvailableError | AllKeysRateLimitedError):
        retry_after_s = exc.retry_after_s
    if retry_after_s is not None:
        # Retry-After takes a whole number of seconds, so the wait is rounded up.
        return {"Retry-After": str(max(1, math.ceil(retry_after_s)))}
    if isinstance(exc, InvalidApiKeyError):
        # HTTP requires a 401 to name, in WWW-Authenticate, the scheme that would succeed.
        return {"WWW-Authenticate": 'Bearer realm="microtopic"'}
    return {}


def error_body(request: Request, code: str, message: str, **extra: Any) -> dict[str, Any]:
    """Return the JSON body shared by every error response, and note its code for metrics."""
    request.state.error_code = code
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


async def handle_http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    status, code, describe = HTTP_ERRORS.get(
        exc.status_code, (exc.status_code, _other_code(exc.status_code), _other_http_error)
    )
    logger.info(
        "request %s: %s %s failed with %d (%s)",
        request_id_of(request),
        request.method,
        _quoted_path(request),
        status,
        code,
    )
    body = error_body(request, code, describe(request, exc))
    return JSONResponse(body, status_code=status, headers=exc.headers)


def _other_code(status: int) -> str:
    try:
        return HTTPStatus(status).name.lower()
    except ValueError:
        return "http_error"


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
    app.add_exception_handler(HTTPException, handle_http_error)
    app.add_exception_handler(Exception, handle_unexpected_error)
