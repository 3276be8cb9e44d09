"""Topic hints, schemas in prompts and replies of the chat module."""

from __future__ import annotations

import json
import random

import pytest

from microtopic.simulator import Fault, FaultKind, FilterCategory
from microtopic.simulator.chat import (
    ChatCompletionBody,
    Message,
    find_schema_in_prompt,
    find_topic_hint,
    shape_reply,
    write_reply,
)
from microtopic.tokens import count_text

CONTENT = '{"title": "Linear equations", "steps": [1, 2, 3]}'


def _user(content: str) -> Message:
    return Message(role="user", content=content)


def test_topic_hint_prefers_topic_tags() -> None:
    messages = [_user("Write about this.\n<topic>  Linear\nequations </topic> now")]

    hint = find_topic_hint(messages)

    assert hint == "Linear equations"


def test_topic_hint_is_first_60_characters() -> None:
    messages = [_user("word " * 30)]

    hint = find_topic_hint(messages)

    assert len(hint) <= 60
    assert hint.startswith("word word")


def test_topic_hint_uses_last_user_message() -> None:
    messages = [_user("<topic>old</topic>"), Message(role="assistant", content="ok")]
    messages.append(_user("<topic>new</topic>"))

    hint = find_topic_hint(messages)

    assert hint == "new"


def test_topic_hint_reads_content_parts() -> None:
    message = Message.model_validate(
        {"role": "user", "content": [{"type": "text", "text": "<topic>Parts</topic>"}]}
    )

    hint = find_topic_hint([message])

    assert hint == "Parts"


def test_schema_found_between_marker_lines() -> None:
    text = 'Intro\nBEGIN JSON SCHEMA\n{"type": "integer"}\nEND JSON SCHEMA\nOutro'

    schema = find_schema_in_prompt([Message(role="system", content=text)])

    assert schema == {"type": "integer"}


def test_schema_inside_code_fence_is_found() -> None:
    text = 'BEGIN JSON SCHEMA\n```json\n{"type": "boolean"}\n```\nEND JSON SCHEMA'

    schema = find_schema_in_prompt([_user(text)])

    assert schema == {"type": "boolean"}


def test_invalid_schema_block_is_skipped() -> None:
    text = "BEGIN JSON SCHEMA\n{not json\nEND JSON SCHEMA"

    schema = find_schema_in_prompt([_user(text)])

    assert schema is None


def test_unusable_prompt_schema_gives_empty_object() -> None:
    text = 'BEGIN JSON SCHEMA\n{"type": "string", "pattern": "^x{3}$"}\nEND JSON SCHEMA'
    body = ChatCompletionBody.model_validate(
        {
            "messages": [{"role": "user", "content": text}],
            "response_format": {"type": "json_object"},
        }
    )

    reply = write_reply(body, random.Random(0))

    assert reply == "{}"


def test_json_schema_reply_is_json() -> None:
    body = ChatCompletionBody.model_validate(
        {
            "messages": [{"role": "user", "content": "<topic>Sets</topic>"}],
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "count", "schema": {"type": "integer", "maximum": 3}},
            },
        }
    )

    reply = write_reply(body, random.Random(0))

    assert json.loads(reply) <= 3


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({}, 4096),
        ({"max_tokens": 100}, 100),
        ({"max_completion_tokens": 50}, 50),
        ({"max_tokens": 100, "max_completion_tokens": 50}, 50),
    ],
)
def test_max_output_tokens_precedence(fields: dict[str, int], expected: int) -> None:
    body = ChatCompletionBody.model_validate({"messages": [{"role": "user"}], **fields})

    assert body.max_output_tokens(default_max_tokens=4096) == expected


def test_reply_without_fault_stops() -> None:
    reply = shape_reply(CONTENT, None, max_output_tokens=100)

    assert reply.content == CONTENT
    assert reply.finish_reason == "stop"
    assert reply.completion_tokens == count_text(CONTENT)
    assert reply.filtered_category is None


def test_truncated_reply_is_cut_json() -> None:
    reply = shape_reply(CONTENT, Fault(kind=FaultKind.TRUNCATED), max_output_tokens=100)

    assert reply.content == CONTENT[: len(CONTENT) // 2]
    assert reply.finish_reason == "length"
    assert reply.completion_tokens == 100
    with pytest.raises(json.JSONDecodeError):
        json.loads(reply.content)


def test_filtered_reply_has_no_content() -> None:
    fault = Fault(kind=FaultKind.CONTENT_FILTER_COMPLETION, category=FilterCategory.HATE)

    reply = shape_reply(CONTENT, fault, max_output_tokens=100)

    assert reply.content is None
    assert reply.finish_reason == "content_filter"
    assert reply.completion_tokens == count_text(CONTENT)
    assert reply.filtered_category is FilterCategory.HATE


def test_fenced_reply_wraps_json() -> None:
    reply = shape_reply(CONTENT, Fault(kind=FaultKind.FENCED_JSON), max_output_tokens=100)

    assert reply.content == f"```json\n{CONTENT}\n```"
    assert reply.finish_reason == "stop"
    assert reply.completion_tokens == count_text(reply.content)
