"""The embedded llama.cpp model: schema adaptation, the model file, and one real generation."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from microtopic.config import LocalModelConfig
from microtopic.domain import QuizDraft, TopicPlan
from microtopic.providers.base import ChatMessage, ChatRequest
from microtopic.providers.local import (
    MAX_STRING_LENGTH,
    MODEL_FILE,
    MODEL_NAME,
    LocalProvider,
    adapt_schema,
    default_model_path,
)


def test_long_string_limit_is_capped() -> None:
    schema = {"type": "string", "minLength": 1, "maxLength": 6000}

    adapted = adapt_schema(schema)

    assert adapted == {"type": "string", "minLength": 1, "maxLength": MAX_STRING_LENGTH}


def test_short_string_limit_is_kept() -> None:
    schema = {"type": "string", "maxLength": 40}

    adapted = adapt_schema(schema)

    assert adapted == {"type": "string", "maxLength": 40}


def test_unbounded_string_gets_limit() -> None:
    schema = {"type": "string", "title": "Title"}

    adapted = adapt_schema(schema)

    assert adapted == {"type": "string", "title": "Title", "maxLength": MAX_STRING_LENGTH}


def test_bounded_integer_becomes_enum() -> None:
    schema = {
        "type": "integer",
        "minimum": 0,
        "maximum": 3,
        "title": "Answer Index",
        "description": "Index of the correct option.",
    }

    adapted = adapt_schema(schema)

    assert adapted == {
        "enum": [0, 1, 2, 3],
        "title": "Answer Index",
        "description": "Index of the correct option.",
    }


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "integer", "minimum": 1, "maximum": 1000},
        {"type": "integer", "minimum": 1},
        {"type": "integer", "maximum": 60},
        {"type": "number", "minimum": 0, "maximum": 1},
    ],
)
def test_wide_or_open_range_is_kept(schema: dict[str, Any]) -> None:
    adapted = adapt_schema(schema)

    assert adapted == schema


def test_unique_items_is_dropped() -> None:
    schema = {
        "type": "array",
        "items": {"type": "string", "maxLength": 10},
        "minItems": 4,
        "maxItems": 4,
        "uniqueItems": True,
    }

    adapted = adapt_schema(schema)

    assert adapted == {
        "type": "array",
        "items": {"type": "string", "maxLength": 10},
        "minItems": 4,
        "maxItems": 4,
    }


def test_nested_schema_is_adapted_throughout() -> None:
    schema = QuizDraft.model_json_schema()

    adapted = adapt_schema(schema)

    question = adapted["$defs"]["QuizQuestion"]
    properties = question["properties"]
    assert properties["question"]["maxLength"] == MAX_STRING_LENGTH
    assert properties["options"]["items"]["maxLength"] == 200
    assert "uniqueItems" not in properties["options"]
    assert properties["answer_index"]["enum"] == [0, 1, 2, 3]
    assert question["required"] == ["question", "options", "answer_index", "explanation"]
    assert adapted["properties"]["questions"] == schema["properties"]["questions"]
    assert adapted["required"] == ["questions"]


def test_input_schema_is_not_changed() -> None:
    schema = QuizDraft.model_json_schema()
    original = copy.deepcopy(schema)

    adapt_schema(schema)

    assert schema == original


def test_default_model_path_finds_gguf() -> None:
    path = default_model_path()

    assert path.is_file()
    assert path.name == MODEL_FILE
    assert path.stat().st_size > 1_000_000


def plan_request(**changes: Any) -> ChatRequest:
    fields: dict[str, Any] = {
        "messages": (ChatMessage("user", "Plan 3 short microtopics for the topic Fractions."),),
        "schema_name": "TopicPlan",
        "json_schema": TopicPlan.model_json_schema(),
        "max_tokens": 300,
        **changes,
    }
    return ChatRequest(**fields)


def test_seed_depends_on_prompt_only() -> None:
    provider = LocalProvider(LocalModelConfig())

    first = provider._seed_for(plan_request())
    again = provider._seed_for(plan_request(max_tokens=600))
    other = provider._seed_for(plan_request(messages=(ChatMessage("user", "Plan decimals."),)))

    assert first == again
    assert first != other


def test_sampling_nonce_changes_seed() -> None:
    provider = LocalProvider(LocalModelConfig())

    plain = provider._seed_for(plan_request())
    retried = provider._seed_for(plan_request(sampling_nonce="request-1"))
    retried_again = provider._seed_for(plan_request(sampling_nonce="request-2"))

    assert retried != plain
    assert retried_again != retried
    assert provider._seed_for(plan_request(sampling_nonce="request-1")) == retried
    assert 0 <= retried < 2**31


@pytest.mark.local_model
async def test_local_model_writes_schema_json() -> None:
    provider = LocalProvider(LocalModelConfig())
    request = ChatRequest(
        messages=(
            ChatMessage("system", "You are a curriculum planner. Reply with JSON only."),
            ChatMessage("user", "Plan 3 short microtopics for the topic Fractions."),
        ),
        schema_name="TopicPlan",
        json_schema=TopicPlan.model_json_schema(),
        max_tokens=300,
    )

    try:
        result = await provider.complete(request, timeout_s=240)
    finally:
        await provider.aclose()

    document = json.loads(result.content, strict=False)
    assert result.finish_reason == "stop"
    assert result.model == MODEL_NAME
    assert result.completion_tokens > 0
    assert set(document) == {"microtopics"}
    assert isinstance(document["microtopics"], list)
