"""The OpenAI-compatible endpoints, which let other applications share the key pool.

- `POST /v1/chat/completions`: OpenAI's route, with the model named in the body;
- `POST /openai/deployments/{deployment}/chat/completions?api-version=...`: Azure's route.

A client authenticates with `Authorization: Bearer TOKEN` or `api-key: TOKEN`, where
TOKEN is one of the `gateway_api_keys` setting. Its body is forwarded as sent, with
`model` set to the chosen key's deployment or model, and the provider's reply comes
back unchanged, with the serving key's name in the `X-Microtopic-Key` header.

The model or deployment that a client names does not choose a key, because every
key of the pool is taken to serve an equivalent model. The reply's `model` names
the model that served it. Streaming is not forwarded.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, SecretStr
from starlette.datastructures import Headers

from microtopic.api.body import require_json_body
from microtopic.api.disconnect import cancel_on_disconnect
from microtopic.api.request_id import received_at_of, request_id_of
from microtopic.api.routes import RuntimeDep
from microtopic.errors import (
    InvalidApiKeyError,
    PassthroughDisabledError,
    StreamingNotSupportedError,
)

KEY_HEADER = "X-Microtopic-Key"
# The paths of the routes below start with one of these.
PASSTHROUGH_PATH_PREFIXES = ("/v1/", "/openai/")


async def require_gateway_api_key(request: Request, runtime: RuntimeDep) -> None:
    """Raise unless the request carries one of the `gateway_api_keys` tokens."""
    tokens = runtime.settings.gateway_api_keys
    if not tokens:
        raise PassthroughDisabledError(
            "The OpenAI-compatible endpoints are disabled because no gateway API key is "
            "set. Add a token to `gateway_api_keys` in the config and restart the service."
        )
    presented = _presented_token(request.headers)
    if presented is None or not _matches_any(presented, tokens):
        raise InvalidApiKeyError(
            "The API key is missing or invalid. Send one of the config's `gateway_api_keys` "
            "as `Authorization: Bearer TOKEN` or as `api-key: TOKEN`."
        )


def _presented_token(headers: Headers) -> str | None:
    api_key = headers.get("api-key")
    if api_key:
        return api_key.strip()
    scheme, _, token = headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return None


def _matches_any(presented: str, tokens: list[SecretStr]) -> bool:
    # Digests of equal length, compared in constant time against every token, so the
    # timing reveals neither a token's length, nor which one matched, nor how much of it.
    candidate = _digest(presented)
    matches = [hmac.compare_digest(candidate, _digest(t.get_secret_value())) for t in tokens]
    return any(matches)


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


router = APIRouter(dependencies=[Depends(require_gateway_api_key), Depends(require_json_body)])


class ChatCompletionBody(BaseModel):
    """The fields of a chat-completions body that are checked here; the rest pass as sent."""

    model_config = ConfigDict(extra="allow")

    messages: list[dict[str, Any]] = Field(min_length=1)
    model: str | None = None
    stream: bool | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)


@router.post("/v1/chat/completions")
async def openai_chat_completions(
    body: ChatCompletionBody, request: Request, runtime: RuntimeDep
) -> JSONResponse:
    """Forward an OpenAI-style chat call to a key of the pool and return its reply."""
    return await _forward(body, request, runtime, requested_model=body.model)


@router.post("/openai/deployments/{deployment}/chat/completions")
async def azure_chat_completions(
    deployment: str, body: ChatCompletionBody, request: Request, runtime: RuntimeDep
) -> JSONResponse:
    """Forward an Azure-style chat call to a key of the pool and return its reply.

    The deployment in the path and the `api-version` query choose no key; the
    deployment is stored with the call as the model it asked for.
    """
    return await _forward(body, request, runtime, requested_model=deployment)


async def _forward(
    body: ChatCompletionBody, request: Request, runtime: RuntimeDep, *, requested_model: str | None
) -> JSONResponse:
    if body.stream:
        raise StreamingNotSupportedError(
            "Streaming is not supported by this endpoint. Send `stream: false` or leave "
            "`stream` out to get the whole reply at once."
        )

    forwarded = body.model_dump(exclude_unset=True)
    work = runtime.passthrough.forward(
        forwarded,
        request_id=request_id_of(request),
        requested_model=requested_model,
        received_at=received_at_of(request),
    )
    outcome = await cancel_on_disconnect(request, work)

    reply = outcome.result.raw
    if reply is None:
        raise RuntimeError(f"key {outcome.key_name} returned no reply body for a forwarded call")
    return JSONResponse(reply, headers={KEY_HEADER: outcome.key_name})
