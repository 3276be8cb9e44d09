"""Remote providers: Azure OpenAI and any OpenAI-compatible endpoint, through the openai SDK.

The SDK's own retries are off (`max_retries=0`) because the gateway owns retries:
two retry layers would multiply attempts and hide failures from the key pool.
"""

from __future__ import annotations

import json
from typing import Any

import openai
from openai.types.chat import ChatCompletion

from microtopic.config import KeyConfig, ProviderKind, StructuredOutput
from microtopic.errors import ConfigError, UpstreamServerError
from microtopic.providers.base import ChatRequest, ChatResult
from microtopic.providers.errors import translate_openai_error

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
            )
            return cls(key, azure, key.deployment)
        if key.provider is ProviderKind.OPENAI and key.model:
            client = openai.AsyncOpenAI(base_url=key.endpoint, api_key=secret, max_retries=0)
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
        return _to_result(completion, dict(raw.headers))

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


def _to_result(completion: ChatCompletion, headers: dict[str, str]) -> ChatResult:
    if not completion.choices:
        raise UpstreamServerError("the provider returned no choices")
    choice = completion.choices[0]
    usage = completion.usage
    return ChatResult(
        content=choice.message.content or "",
        model=completion.model,
        prompt_tokens=usage.prompt_tokens if usage else 0,
        completion_tokens=usage.completion_tokens if usage else 0,
        finish_reason=choice.finish_reason or "stop",
        headers=headers,
    )
