"""Remote providers: Azure OpenAI and any OpenAI-compatible endpoint, through the openai SDK.

The SDK's own retries are off (`max_retries=0`) because the gateway owns retries:
two retry layers would multiply attempts and hide failures from the key pool.
"""

from __future__ import annotations

import json
from typing import Any

import openai
from openai.types.chat import ChatCompletion

from microtopic import tokens
from microtopic.config import KeyConfig, ProviderKind, StructuredOutput
from microtopic.errors import (
    ConfigError,
    ContentFilteredError,
    TruncatedOutputError,
    UpstreamServerError,
)
from microtopic.providers.base import ChatRequest, ChatResult, PassthroughRequest, notify_sent
from microtopic.providers.errors import (
    filtered_categories,
    translate_openai_error,
    translate_passthrough_error,
)

SCHEMA_BEGIN = "BEGIN JSON SCHEMA"
SCHEMA_END = "END JSON SCHEMA"


class RemoteProvider:
    """A provider bound to one remote key."""

    def __init__(self, key: KeyConfig, client: openai.AsyncOpenAI, model: str) -> None:
        self._key = key
        self._client = client
        self._model = model

    @classmethod
    def from_key(cls, key: KeyConfig) -> RemoteProvider:
        """Build the SDK client for `key`, an `azure` or `openai` key."""
        if key.secret is None or key.endpoint is None:
            raise ConfigError(f"Key {key.name!r} needs an endpoint and a secret.")
        secret = key.secret.get_secret_value()
        if key.provider is ProviderKind.AZURE and key.deployment:
            azure = openai.AsyncAzureOpenAI(
                azure_endpoint=key.endpoint,
                api_key=secret,
                api_version=key.api_version,
                max_retries=0,
                http_client=_http_client(),
            )
            return cls(key, azure, key.deployment)
        if key.provider is ProviderKind.OPENAI and key.model:
            client = openai.AsyncOpenAI(
                base_url=key.endpoint, api_key=secret, max_retries=0, http_client=_http_client()
            )
            return cls(key, client, key.model)
        raise ConfigError(f"Key {key.name!r} is not a complete azure or openai key.")

    async def complete(self, request: ChatRequest, *, timeout_s: float) -> ChatResult:
        """Send one chat completion; raise an `UpstreamError` subclass on failure."""
        try:
            raw = await self._client.chat.completions.with_raw_response.create(
                model=self._model,
                messages=self._messages(request),
                response_format=self._response_format(request),
                max_tokens=request.max_tokens,
                temperature=request.temperature,
                timeout=timeout_s,
            )
            completion: ChatCompletion = raw.parse()
        except openai.OpenAIError as exc:
            raise translate_openai_error(exc) from exc
        return _to_result(completion, dict(raw.headers), request.max_tokens)

    async def forward(self, request: PassthroughRequest, *, timeout_s: float) -> ChatResult:
        """Send a client's body with this key's model; return the reply body as it came."""
        extra = {name: value for name, value in request.body.items() if name != "model"}
        messages = extra.pop("messages")
        try:
            # Every field but the two the SDK requires goes in `extra_body`, so that the
            # SDK sends it unchanged, whether or not this SDK version declares the field.
            raw = await self._client.chat.completions.with_raw_response.create(
                model=self._model, messages=messages, extra_body=extra, timeout=timeout_s
            )
            text = raw.text
        except openai.OpenAIError as exc:
            raise translate_passthrough_error(exc) from exc
        return _to_passthrough_result(text, dict(raw.headers))

    def admission_tokens(self, request: ChatRequest) -> int:
        """Return what this call is charged against the key's tokens-per-minute quota."""
        return tokens.admission_tokens(
            self._messages(request), self._response_format(request), request.max_tokens
        )

    async def check(self, *, timeout_s: float) -> None:
        """Make the smallest possible call (one output token) to prove the key works."""
        try:
            await self._client.chat.completions.create(
                model=self._model,
                messages=[{"role": "user", "content": "Reply with OK."}],
                max_tokens=1,
                timeout=timeout_s,
            )
        except openai.OpenAIError as exc:
            raise translate_openai_error(exc) from exc

    async def aclose(self) -> None:
        """Close the SDK client's connection pool."""
        await self._client.close()

    def _messages(self, request: ChatRequest) -> list[Any]:
        messages: list[Any] = [{"role": m.role, "content": m.content} for m in request.messages]
        if self._key.structured_output is StructuredOutput.JSON_OBJECT:
            # JSON mode only promises syntax, so the schema travels in the prompt.
            schema = json.dumps(request.json_schema, separators=(",", ":"))
            messages.append(
                {
                    "role": "system",
                    "content": f"Reply with one JSON document that validates against this "
                    f"schema.\n{SCHEMA_BEGIN}\n{schema}\n{SCHEMA_END}",
                }
            )
        return messages

    def _response_format(self, request: ChatRequest) -> Any:
        if self._key.structured_output is StructuredOutput.JSON_OBJECT:
            return {"type": "json_object"}
        # strict=False: strict mode rejects keywords our schemas use (minItems, maxLength),
        # and every reply is validated by pydantic afterwards anyway.
        return {
            "type": "json_schema",
            "json_schema": {
                "name": request.schema_name,
                "schema": request.json_schema,
                "strict": False,
            },
        }


def _http_client() -> openai.DefaultAsyncHttpxClient:
    # The SDK's own client and defaults, plus a hook that runs as each request leaves.
    return openai.DefaultAsyncHttpxClient(event_hooks={"request": [_on_request_leaving]})


async def _on_request_leaving(request: object) -> None:
    notify_sent()


def _to_result(completion: ChatCompletion, headers: dict[str, str], max_tokens: int) -> ChatResult:
    if not completion.choices:
        raise UpstreamServerError("the provider returned no choices")
    choice = completion.choices[0]
    if choice.finish_reason == "content_filter":
        categories = filtered_categories(getattr(choice, "content_filter_results", None))
        raise ContentFilteredError(
            "the provider's content filter withheld the completion", categories=categories
        )
    if choice.finish_reason == "length":
        raise TruncatedOutputError(
            f"the reply was cut off at max_tokens ({max_tokens})", max_tokens=max_tokens
        )
    usage = completion.usage
    return ChatResult(
        content=choice.message.content or "",
        model=completion.model,
        prompt_tokens=usage.prompt_tokens if usage else 0,
        completion_tokens=usage.completion_tokens if usage else 0,
        finish_reason=choice.finish_reason or "stop",
        headers=headers,
    )


def _to_passthrough_result(text: str, headers: dict[str, str]) -> ChatResult:
    # The reply goes back to the client as it came; only the fields read here must be sane.
    try:
        body = json.loads(text)
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise UpstreamServerError("the provider sent a reply that is not a JSON object")

    choices = body.get("choices")
    choice = _mapping(choices[0] if isinstance(choices, list) and choices else None)
    message = _mapping(choice.get("message"))
    usage = _mapping(body.get("usage"))
    return ChatResult(
        content=str(message.get("content") or ""),
        model=str(body.get("model") or ""),
        prompt_tokens=_count(usage.get("prompt_tokens")),
        completion_tokens=_count(usage.get("completion_tokens")),
        finish_reason=str(choice.get("finish_reason") or ""),
        headers=headers,
        raw=body,
    )


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _count(value: Any) -> int:
    return value if isinstance(value, int) and value >= 0 else 0
