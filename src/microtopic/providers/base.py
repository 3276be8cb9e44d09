"""The provider interface: one chat completion on one key, returning JSON text."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol


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
    """

    messages: tuple[ChatMessage, ...]
    schema_name: str
    json_schema: dict[str, Any]
    max_tokens: int
    temperature: float = 0.7


@dataclass(frozen=True)
class ChatResult:
    """A provider's answer: the raw text and what the call cost."""

    content: str
    model: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str
    headers: dict[str, str] = field(default_factory=dict)


class Provider(Protocol):
    """A client bound to one key; it raises `UpstreamError` subclasses on failure."""

    async def complete(self, request: ChatRequest, *, timeout_s: float) -> ChatResult:
        """Send one chat completion and return its result."""
        ...

    async def aclose(self) -> None:
        """Release the client's connections or model memory."""
        ...
