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

from microtopic.simulator.chat import Reply
from microtopic.simulator.faults import Fault, FilterCategory
from microtopic.simulator.quota import KeyQuota, QuotaKind, QuotaRejection, whole_ms

# The severity reported for the category a content filter fault filters.
_FILTERED_SEVERITY = "medium"

# The `retry-after` of an `insufficient_quota` fault, in seconds: one day.
INSUFFICIENT_QUOTA_RETRY_AFTER_S = 86_400


class Dialect(StrEnum):
    """Wire format of a route: Azure OpenAI's or OpenAI's."""

    AZURE = "azure"
    OPENAI = "openai"


def completion_response(
    dialect: Dialect, *, model: str, reply: Reply, prompt_tokens: int
) -> JSONResponse:
    """Build a 200 `chat.completion` response with `reply` as its one choice.

    Azure adds the content filter results of the prompt and of the choice. A filtered
    reply marks its category as filtered.
    """
    completion_tokens = reply.completion_tokens
    choice: dict[str, Any] = {
        "index": 0,
        "message": {"role": "assistant", "content": reply.content, "refusal": None},
        "logprobs": None,
        "finish_reason": reply.finish_reason,
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
        choice["content_filter_results"] = _filter_results(reply.filtered_category)
        body["prompt_filter_results"] = [
            {"prompt_index": 0, "content_filter_results": _filter_results(None)}
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


def quota_exceeded_response(
    dialect: Dialect,
    rejection: QuotaRejection,
    quota: KeyQuota,
    *,
    api_version: str,
    retry_after_s: float | None,
) -> JSONResponse:
    """Build the 429 response for a request over the key's quota.

    `retry_after_s` is the real time until the request would fit. It is sent in whole
    seconds, rounded up, as `retry-after`, and in milliseconds as `retry-after-ms` and
    `x-ms-retry-after-ms`, the headers Azure sends. None, for a request whose charge
    alone is over the limit, sends no retry hints.
    """
    if retry_after_s is None:
        message = _never_fits_message(rejection, quota)
        headers: dict[str, str] = {}
    else:
        headers = _retry_headers(retry_after_s)
        exceeded = " and the ".join(_describe_limit(kind, quota) for kind in rejection.exceeded)
        message = (
            f"Requests to the ChatCompletions_Create Operation under Azure OpenAI API version "
            f"{api_version} have exceeded the {exceeded} of this key. "
            f"Please retry after {headers['retry-after']} seconds."
        )

    if dialect is Dialect.AZURE:
        return _azure_error(429, "429", message, headers=headers)
    return _openai_error(
        429,
        "rate_limit_exceeded",
        message,
        error_type=str(rejection.exceeded[-1]),
        headers=headers,
    )


def insufficient_quota_response(dialect: Dialect) -> JSONResponse:
    """Build the 429 response of an `insufficient_quota` fault: no quota left for a day."""
    message = (
        "This key has used up its quota (a simulated fault). "
        "Use another key or raise the key's quota."
    )
    headers = {"retry-after": str(INSUFFICIENT_QUOTA_RETRY_AFTER_S)}
    if dialect is Dialect.AZURE:
        return _azure_error(429, "insufficient_quota", message, headers=headers)
    return _openai_error(
        429, "insufficient_quota", message, error_type="insufficient_quota", headers=headers
    )


def server_error_response(dialect: Dialect) -> JSONResponse:
    """Build the 500 response of a `server_error` fault."""
    message = "The server had an error while processing the request (a simulated fault)."
    if dialect is Dialect.AZURE:
        return _azure_error(500, "InternalServerError", message)
    return _openai_error(500, None, message, error_type="server_error")


def service_unavailable_response(dialect: Dialect) -> JSONResponse:
    """Build the 503 response of a `service_unavailable` fault."""
    message = "The service is temporarily unable to process the request (a simulated fault)."
    if dialect is Dialect.AZURE:
        return _azure_error(503, "ServiceUnavailable", message)
    return _openai_error(503, None, message, error_type="server_error")


def request_timeout_response(dialect: Dialect, hang_s: float) -> JSONResponse:
    """Build the 408 response a `hang` fault sends if the client waits `hang_s` seconds."""
    message = f"The request timed out after {hang_s:g} s (a simulated `hang` fault)."
    if dialect is Dialect.AZURE:
        return _azure_error(408, "Timeout", message)
    return _openai_error(408, "timeout", message, error_type="timeout")


def content_filter_prompt_response(dialect: Dialect, category: FilterCategory) -> JSONResponse:
    """Build the 400 response of a `content_filter_prompt` fault: the prompt was filtered.

    Azure's body has code `content_filter` and, under `innererror`, the code
    `ResponsibleAIPolicyViolation` with the result of each filter category.
    """
    message = (
        f"The prompt was filtered by the content management policy: it was rated "
        f"{_FILTERED_SEVERITY} for {category} (a simulated fault). Change the prompt and retry."
    )
    if dialect is Dialect.OPENAI:
        return _openai_error(
            400, "content_filter", message, error_type="invalid_request_error", param="prompt"
        )
    error = {
        "message": message,
        "type": None,
        "param": "prompt",
        "code": "content_filter",
        "status": 400,
        "innererror": {
            "code": "ResponsibleAIPolicyViolation",
            "content_filter_result": _filter_results(category),
        },
    }
    return JSONResponse({"error": error}, status_code=400)


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


def _filter_results(filtered: FilterCategory | None) -> dict[str, Any]:
    results = {}
    for category in FilterCategory:
        if category is filtered:
            results[str(category)] = {"filtered": True, "severity": _FILTERED_SEVERITY}
        else:
            results[str(category)] = {"filtered": False, "severity": "safe"}
    return results


def _retry_headers(retry_after_s: float) -> dict[str, str]:
    retry_after_ms = whole_ms(retry_after_s)
    return {
        "retry-after": str(math.ceil(retry_after_ms / 1000)),
        "retry-after-ms": str(retry_after_ms),
        "x-ms-retry-after-ms": str(retry_after_ms),
    }


def _describe_limit(kind: QuotaKind, quota: KeyQuota) -> str:
    if kind is QuotaKind.REQUESTS:
        window = quota.requests
        return f"request rate limit ({window.limit} requests per {window.window_s:g} s)"
    window = quota.tokens
    return f"token rate limit ({window.limit} tokens per {window.window_s:g} s)"


def _never_fits_message(rejection: QuotaRejection, quota: KeyQuota) -> str:
    return (
        f"This request is charged {rejection.charge_tokens} tokens (its prompt plus "
        f"max_tokens), more than the {quota.tokens.limit} tokens this key may use in any "
        f"{quota.tokens.window_s:g} s window, so it can never be admitted. "
        "Lower max_tokens or shorten the prompt."
    )
