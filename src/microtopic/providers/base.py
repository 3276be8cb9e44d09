"""The provider interface: one chat completion on one key, returning JSON text."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Protocol

from microtopic import tokens

# Output tokens charged at admission for a forwarded body without `max_tokens`. It is an
# estimate, because Azure reserves the model's whole context window for such a call and
# that size is not known here. A body that sets `max_tokens` is charged exactly.
DEFAULT_PASSTHROUGH_MAX_TOKENS = 4096


@dataclass(frozen=True)
class ChatMessage:
    """One message of a chat prompt."""

    role: str
    content: str


@dataclass(frozen=True)
class ChatRequest:
    """A request for one JSON document that validates against `json_schema`.

    `schema_name` names the schema for providers that require a name
    (OpenAI's structured outputs accept `^[a-zA-Z0-9_-]{1,64}$`).
    `sampling_nonce` is mixed into the seed of a provider that derives it from the
    prompt (the local model), so the same prompt samples differently; the pipeline
    sets it to the request id when the user marks the request as a retry.
    """

    messages: tuple[ChatMessage, ...]
    schema_name: str
    json_schema: dict[str, Any]
    max_tokens: int
    temperature: float = 0.7
    sampling_nonce: str | None = None


@dataclass(frozen=True)
class PassthroughRequest:
    """A client's chat-completions body, to be forwarded as sent but for its `model`.

    The body has at least a non-empty `messages` list and never `stream: true`; the
    HTTP route checks both before building the request.
    """

    body: Mapping[str, Any]

    @property
    def max_output_tokens(self) -> int:
        """Return the output limit: `max_completion_tokens`, `max_tokens` or the default."""
        for name in ("max_completion_tokens", "max_tokens"):
            value = self.body.get(name)
            if isinstance(value, int) and value > 0:
                return value
        return DEFAULT_PASSTHROUGH_MAX_TOKENS

    def admission_tokens(self) -> int:
        """Return what the body is charged against a tokens-per-minute quota on arrival.

        Tool and function definitions reach the model as text, so their compact JSON
        is counted too; the provider's own rendering of them differs a little.
        """
        total = tokens.admission_tokens(
            self.body["messages"], self.body.get("response_format"), self.max_output_tokens
        )
        for name in ("tools", "functions"):
            if self.body.get(name):
                total += tokens.count_text(json.dumps(self.body[name], separators=(",", ":")))
        return total


@dataclass(frozen=True)
class ChatResult:
    """A provider's answer: the raw text and what the call cost.

    `raw` is the provider's whole reply body, kept only for a forwarded request.
    """

    content: str
    model: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str
    headers: dict[str, str] = field(default_factory=dict)
    raw: dict[str, Any] | None = None


# Set by the gateway around one provider call. A provider calls `notify_sent` at the
# moment the request leaves, so the key's quota counts the call from then.
on_send: ContextVar[Callable[[], None] | None] = ContextVar("microtopic_on_send", default=None)


def notify_sent() -> None:
    """Tell the gateway, if it is listening, that the current call is leaving now."""
    callback = on_send.get()
    if callback is not None:
        callback()


class Provider(Protocol):
    """A client bound to one key; it raises `UpstreamError` subclasses on failure."""

    async def complete(self, request: ChatRequest, *, timeout_s: float) -> ChatResult:
        """Send one chat completion and return its result."""
        ...

    async def forward(self, request: PassthroughRequest, *, timeout_s: float) -> ChatResult:
        """Send a client's body with this key's model and return the reply, whole, in `raw`.

        Unlike `complete`, a reply cut off at its limit or withheld by the content
        filter is returned as it came, not raised.
        """
        ...

    def admission_tokens(self, request: ChatRequest) -> int:
        """Return the tokens a provider charges `request` on arrival: prompt plus max_tokens."""
        ...

    async def check(self, *, timeout_s: float) -> None:
        """Make the cheapest call that proves the key works; raise `UpstreamError` if not."""
        ...

    async def aclose(self) -> None:
        """Release the client's connections or model memory."""
        ...
