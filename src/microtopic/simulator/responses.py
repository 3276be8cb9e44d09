"""Response bodies in the wire formats of Azure OpenAI and OpenAI: completions and errors.

Azure wraps errors as `{"error": {"code": ..., "message": ...}}`, with the HTTP status
as a string code for 401 and 429. OpenAI sends `{"error": {"message", "type", "param",
"code"}}`. The openai SDK reads either and raises by HTTP status. Messages are written
for the simulator and only follow the shape of the real ones.
"""

from __future__ import annotations

import math
import time
import uuid
from enum import StrEnum
from typing import Any

from starlette.responses import JSONResponse

from microtopic.simulator.state import Fault

# Azure reports these content filter categories for the prompt and for each choice.
_FILTER_CATEGORIES = ("hate", "self_harm", "sexual", "violence")


class Dialect(StrEnum):
    """Wire format of a route: Azure OpenAI's or OpenAI's."""

    AZURE = "azure"
    OPENAI = "openai"


def estimate_tokens(text: str) -> int:
    """Estimate a token count as one token per 4 characters, rounded up."""
    return math.ceil(len(text) / 4)


def completion_response(
    dialect: Dialect, *, model: str, content: str, prompt_text: str
) -> JSONResponse:
    """Build a 200 `chat.completion` response with one choice that ends with "stop"."""
    prompt_tokens = estimate_tokens(prompt_text)
    completion_tokens = estimate_tokens(content)
    choice: dict[str, Any] = {
        "index": 0,
        "message": {"role": "assistant", "content": content, "refusal": None},
        "logprobs": None,
        "finish_reason": "stop",
    }
    body: dict[str, Any] = {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": "fp_simulator",
        "choices": [choice],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }
    if dialect is Dialect.AZURE:
        choice["content_filter_results"] = _passed_filters()
        body["prompt_filter_results"] = [
            {"prompt_index": 0, "content_filter_results": _passed_filters()}
        ]
    return JSONResponse(body)


def invalid_key_response(dialect: Dialect) -> JSONResponse:
    """Build the 401 response for a missing, unknown or revoked key."""
    if dialect is Dialect.AZURE:
        message = (
            "Access denied due to invalid subscription key or wrong API endpoint. "
            "Send a key from the simulator config in the `api-key` header."
        )
        return _azure_error(401, "401", message)
    message = "Incorrect API key provided. Send a key from the simulator config as a bearer token."
    return _openai_error(401, "invalid_api_key", message, error_type="invalid_request_error")


def deployment_not_found_response(dialect: Dialect, deployment: str) -> JSONResponse:
    """Build the 404 response for a deployment or model that the key may not call."""
    if dialect is Dialect.AZURE:
        message = (
            f"The API deployment {deployment!r} does not exist for this key. Check the "
            "deployment name, or add it to the key's `deployments` in the simulator config."
        )
        return _azure_error(404, "DeploymentNotFound", message)
    message = f"The model {deployment!r} does not exist or this key may not use it."
    return _openai_error(
        404, "model_not_found", message, error_type="invalid_request_error", param="model"
    )


def missing_api_version_response() -> JSONResponse:
    """Build Azure's 400 response for a request without the `api-version` query parameter."""
    message = (
        "The api-version query parameter is missing. Add it to the URL, "
        "for example ?api-version=2024-10-21."
    )
    return _azure_error(400, "MissingApiVersionParameter", message)


def bad_request_response(dialect: Dialect, message: str, *, param: str | None) -> JSONResponse:
    """Build the 400 response for an invalid request body; `param` names the field."""
    if dialect is Dialect.AZURE:
        return _azure_error(400, "BadRequest", message, param=param)
    return _openai_error(400, None, message, error_type="invalid_request_error", param=param)


def rate_limited_response(dialect: Dialect, fault: Fault, *, api_version: str) -> JSONResponse:
    """Build the 429 response of a `rate_limit` fault, with the retry hints it carries.

    Azure sends `retry-after` in whole seconds and, for some operations, `retry-after-ms`
    and `x-ms-retry-after-ms`. A fault without hints sends none of them, so that tests can
    exercise a client's own backoff.
    """
    headers: dict[str, str] = {}
    retry_after_s = fault.retry_after_whole_s()
    if retry_after_s is not None:
        headers["retry-after"] = str(retry_after_s)
    if fault.retry_after_ms is not None:
        headers["retry-after-ms"] = str(fault.retry_after_ms)
        headers["x-ms-retry-after-ms"] = str(fault.retry_after_ms)

    when = "later" if retry_after_s is None else f"after {retry_after_s} seconds"
    if dialect is Dialect.AZURE:
        message = (
            f"Requests to the ChatCompletions_Create Operation under Azure OpenAI API version "
            f"{api_version} have exceeded the simulated rate limit of this key. "
            f"Please retry {when}."
        )
        return _azure_error(429, "429", message, headers=headers)
    message = f"Rate limit reached for this key in the simulator. Please retry {when}."
    return _openai_error(
        429, "rate_limit_exceeded", message, error_type="requests", headers=headers
    )


def server_error_response(dialect: Dialect) -> JSONResponse:
    """Build the 500 response of a `server_error` fault."""
    message = "The server had an error while processing the request (a simulated fault)."
    if dialect is Dialect.AZURE:
        return _azure_error(500, "InternalServerError", message)
    return _openai_error(500, None, message, error_type="server_error")


def http_error_response(status_code: int, detail: str) -> JSONResponse:
    """Build Azure's response for a request no route accepts, such as an unknown path (404)."""
    messages = {
        404: "Resource not found.",
        405: "The HTTP method is not allowed for this path.",
    }
    message = messages.get(status_code, f"{detail.rstrip('.')}.")
    return _azure_error(status_code, str(status_code), message)


def _azure_error(
    status_code: int,
    code: str,
    message: str,
    *,
    param: str | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    error: dict[str, Any] = {"code": code, "message": message}
    if param is not None:
        error["param"] = param
    return JSONResponse({"error": error}, status_code=status_code, headers=headers)


def _openai_error(
    status_code: int,
    code: str | None,
    message: str,
    *,
    error_type: str,
    param: str | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    error = {"message": message, "type": error_type, "param": param, "code": code}
    return JSONResponse({"error": error}, status_code=status_code, headers=headers)


def _passed_filters() -> dict[str, Any]:
    return {category: {"filtered": False, "severity": "safe"} for category in _FILTER_CATEGORIES}
