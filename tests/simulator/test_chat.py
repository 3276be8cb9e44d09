"""Topic hints, schemas in prompts and replies of the chat module."""

from __future__ import annotations

import json
import random

from microtopic.simulator.chat import (
    ChatCompletionBody,
    Message,
    find_schema_in_prompt,
    find_topic_hint,
    write_reply,
)


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
