"""The body of a chat-completions request, and the reply the simulator writes for it.

The reply depends on `response_format`:

- `json_schema`: a JSON document built from the schema;
- `json_object`: a document built from a JSON Schema found in the prompt between a line
  `BEGIN JSON SCHEMA` and a line `END JSON SCHEMA`, or `{}` when there is none;
- absent or `text`: a few sentences of plain text.

Strings in the reply are about the topic hint: the text between `<topic>` and `</topic>`
in the last user message, or else the first 60 characters of that message.
"""

from __future__ import annotations

import json
import logging
import random
import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from microtopic.simulator.content import UnsupportedSchemaError, instance_from_schema
from microtopic.simulator.text import LessonText

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

    def prompt_text(self) -> str:
        """Return the text of all messages, for the token estimate."""
        return "\n".join(message.text() for message in self.messages)


def write_reply(body: ChatCompletionBody, rng: random.Random) -> str:
    """Write the reply content for `body`, as described in the module docstring.

    `max_tokens` and `max_completion_tokens` are validated but never truncate the reply.
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
