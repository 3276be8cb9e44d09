"""The body of a chat-completions request, and the reply the simulator writes for it.

The reply depends on `response_format`:

- `json_schema`: a JSON document built from the schema;
- `json_object`: a document built from a JSON Schema found in the prompt between a line
  `BEGIN JSON SCHEMA` and a line `END JSON SCHEMA`, or `{}` when there is none;
- absent or `text`: a few sentences of plain text.

Strings in the reply are about the topic hint: the text between `<topic>` and `</topic>`
in the last user message, or else the first 60 characters of that message.

`shape_reply` then applies a reply fault to the written content.
"""

from __future__ import annotations

import json
import logging
import random
import re
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from microtopic.simulator.content import UnsupportedSchemaError, instance_from_schema
from microtopic.simulator.faults import Fault, FaultKind, FilterCategory
from microtopic.simulator.text import LessonText
from microtopic.tokens import count_text

logger = logging.getLogger(__name__)

TOPIC_HINT_LENGTH = 60

_TOPIC_TAG = re.compile(r"<topic>(.*?)</topic>", re.DOTALL)
_SCHEMA_BLOCK = re.compile(
    r"^[ \t]*BEGIN JSON SCHEMA[ \t]*\r?\n(.*?)^[ \t]*END JSON SCHEMA[ \t]*$",
    re.MULTILINE | re.DOTALL,
)
_CODE_FENCE = re.compile(r"^\s*```[A-Za-z]*\s*\n(.*?)\n\s*```\s*$", re.DOTALL)


class _Lenient(BaseModel):
    # Clients send many fields the simulator does not use (temperature, seed, tools...).
    model_config = ConfigDict(extra="allow", frozen=True)


class ContentPart(_Lenient):
    """One part of a message whose content is a list, such as `{"type": "text", ...}`."""

    type: str
    text: str | None = None


class Message(_Lenient):
    """One message of the prompt."""

    role: str
    content: str | list[ContentPart] | None = None

    def text(self) -> str:
        """Return the message's text, with the text parts of a list joined by newlines."""
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "\n".join(part.text for part in self.content if part.text is not None)


class JsonSchemaSpec(_Lenient):
    """The `json_schema` member of a structured-output `response_format`."""

    name: str = Field(min_length=1, max_length=64, pattern=r"^[a-zA-Z0-9_-]+$")
    # The wire name is `schema`, which pydantic reserves for a BaseModel method.
    json_schema: dict[str, Any] = Field(alias="schema")
    strict: bool | None = None
    description: str | None = None


class TextFormat(_Lenient):
    """`response_format` asking for plain text."""

    type: Literal["text"]


class JsonObjectFormat(_Lenient):
    """`response_format` asking for any JSON object (JSON mode)."""

    type: Literal["json_object"]


class JsonSchemaFormat(_Lenient):
    """`response_format` asking for JSON that validates against a schema (structured outputs)."""

    type: Literal["json_schema"]
    json_schema: JsonSchemaSpec


ResponseFormat = Annotated[
    TextFormat | JsonObjectFormat | JsonSchemaFormat, Field(discriminator="type")
]


class ChatCompletionBody(_Lenient):
    """The fields of a chat-completions request body that the simulator reads."""

    messages: list[Message] = Field(min_length=1)
    model: str | None = None
    response_format: ResponseFormat | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    stream: bool | None = None

    def max_output_tokens(self, default_max_tokens: int) -> int:
        """Return the output token limit: `max_completion_tokens`, `max_tokens` or the default.

        `max_completion_tokens` wins when both are sent, because it replaces the
        deprecated `max_tokens`.
        """
        if self.max_completion_tokens is not None:
            return self.max_completion_tokens
        if self.max_tokens is not None:
            return self.max_tokens
        return default_max_tokens


@dataclass(frozen=True)
class Reply:
    """The choice the simulator returns: its content, why it ended, and its token count."""

    content: str | None
    finish_reason: str
    completion_tokens: int
    filtered_category: FilterCategory | None = None


def write_reply(body: ChatCompletionBody, rng: random.Random) -> str:
    """Write the reply content for `body`, as described in the module docstring.

    `max_tokens` and `max_completion_tokens` never cut the content written here; only a
    `truncated` fault does, in `shape_reply`.
    Raises UnsupportedSchemaError when a `json_schema` format has a schema that no value
    can satisfy.
    """
    topic_hint = find_topic_hint(body.messages)
    response_format = body.response_format

    if isinstance(response_format, JsonSchemaFormat):
        schema = response_format.json_schema.json_schema
        return json.dumps(instance_from_schema(schema, rng=rng, topic_hint=topic_hint))
    if isinstance(response_format, JsonObjectFormat):
        return _json_object_reply(body.messages, rng, topic_hint)
    return LessonText(rng, topic_hint).write("explanation", 0, max_length=600)


def shape_reply(content: str, fault: Fault | None, max_output_tokens: int) -> Reply:
    """Build the reply for `content`, changed by the reply fault `fault` if there is one.

    - `content_filter_completion`: no content, finish reason `content_filter`, with the
      tokens that were generated and then filtered;
    - `truncated`: the first half of the content (cut by characters, so JSON is left
      unclosed), finish reason `length`, and `max_output_tokens` completion tokens, as
      when a model stops at its limit;
    - `fenced_json`: the content in a Markdown code fence marked `json`.
    """
    kind = None if fault is None else fault.kind
    if fault is not None and kind is FaultKind.CONTENT_FILTER_COMPLETION:
        return Reply(None, "content_filter", count_text(content), fault.category)
    if kind is FaultKind.TRUNCATED:
        return Reply(content[: len(content) // 2], "length", max_output_tokens)
    if kind is FaultKind.FENCED_JSON:
        content = f"```json\n{content}\n```"
    return Reply(content, "stop", count_text(content))


def find_topic_hint(messages: list[Message]) -> str:
    """Return the topic between `<topic>` tags in the last user message, or its start."""
    user_messages = [message for message in messages if message.role == "user"]
    if not user_messages:
        return ""
    text = user_messages[-1].text()

    match = _TOPIC_TAG.search(text)
    if match is not None:
        return " ".join(match.group(1).split())
    return " ".join(text.split())[:TOPIC_HINT_LENGTH].strip()


def find_schema_in_prompt(messages: list[Message]) -> dict[str, Any] | None:
    """Return the JSON Schema of the latest message that has a valid schema block, if any."""
    for message in reversed(messages):
        for match in reversed(list(_SCHEMA_BLOCK.finditer(message.text()))):
            block = match.group(1)
            fenced = _CODE_FENCE.match(block)
            if fenced is not None:
                block = fenced.group(1)
            try:
                schema = json.loads(block)
            except ValueError:
                logger.debug("Skipped a JSON Schema block in the prompt that is not valid JSON")
                continue
            if isinstance(schema, dict):
                return schema
    return None


def _json_object_reply(messages: list[Message], rng: random.Random, topic_hint: str) -> str:
    schema = find_schema_in_prompt(messages)
    if schema is None:
        return "{}"
    try:
        value = instance_from_schema(schema, rng=rng, topic_hint=topic_hint)
    except UnsupportedSchemaError as exc:
        # A model would still answer a prompt, so this is no reason to fail the call.
        logger.warning("Replied {} because the JSON Schema in the prompt is unusable: %s", exc)
        return "{}"
    return json.dumps(value)
