"""JSON values built from JSON Schemas by `instance_from_schema`."""

from __future__ import annotations

import random
from typing import Any

import pytest
from pydantic import BaseModel

from microtopic.domain import MicrotopicDraft, QuizDraft, TopicPlan
from microtopic.simulator import UnsupportedSchemaError, instance_from_schema

TOPIC = "Linear equations"


def _build(schema: dict[str, Any], seed: int = 0) -> Any:
    return instance_from_schema(schema, rng=random.Random(seed), topic_hint=TOPIC)


@pytest.mark.parametrize("model", [TopicPlan, MicrotopicDraft, QuizDraft])
def test_domain_instances_validate(model: type[BaseModel]) -> None:
    schema = model.model_json_schema()

    instances = [_build(schema, seed) for seed in range(200)]

    for instance in instances:
        model.model_validate(instance)


def test_quiz_questions_follow_domain_rules() -> None:
    schema = QuizDraft.model_json_schema()

    drafts = [QuizDraft.model_validate(_build(schema, seed)) for seed in range(200)]

    for draft in drafts:
        for question in draft.questions:
            assert len({option.casefold() for option in question.options}) == 4
            assert 0 <= question.answer_index <= 3


def test_strings_mention_the_topic() -> None:
    schema = MicrotopicDraft.model_json_schema()

    draft = MicrotopicDraft.model_validate(_build(schema))

    assert TOPIC in draft.title
    assert TOPIC in draft.summary
    assert TOPIC in draft.worked_example


def test_same_seed_builds_same_value() -> None:
    schema = QuizDraft.model_json_schema()

    first, second = _build(schema, seed=5), _build(schema, seed=5)

    assert first == second


@pytest.mark.parametrize(("min_length", "max_length"), [(0, 0), (1, 1), (5, 9), (390, 400)])
def test_string_respects_length_limits(min_length: int, max_length: int) -> None:
    schema = {"type": "string", "minLength": min_length, "maxLength": max_length}

    values = [_build(schema, seed) for seed in range(50)]

    for value in values:
        assert min_length <= len(value) <= max_length
        assert value == value.strip()


def test_long_min_length_is_reached() -> None:
    schema = {"type": "string", "minLength": 5000}

    value = _build(schema)

    assert len(value) >= 5000


def test_unique_short_strings_are_distinct() -> None:
    schema = {
        "type": "array",
        "items": {"type": "string", "maxLength": 1},
        "minItems": 30,
        "maxItems": 30,
        "uniqueItems": True,
    }

    value = _build(schema)

    assert len({item.casefold() for item in value}) == 30


def test_array_length_within_bounds() -> None:
    schema = {"type": "array", "items": {"type": "integer"}, "minItems": 2, "maxItems": 3}

    lengths = {len(_build(schema, seed)) for seed in range(50)}

    assert lengths == {2, 3}


def test_prefix_items_fill_each_position() -> None:
    schema = {
        "type": "array",
        "prefixItems": [{"type": "integer"}, {"type": "boolean"}],
        "items": False,
        "minItems": 2,
    }

    value = _build(schema)

    assert isinstance(value[0], int)
    assert isinstance(value[1], bool)
    assert len(value) == 2


@pytest.mark.parametrize(
    ("bounds", "allowed"),
    [
        ({"minimum": 1, "maximum": 3}, {1, 2, 3}),
        ({"exclusiveMinimum": 1, "exclusiveMaximum": 3}, {2}),
        ({"minimum": 10, "maximum": 30, "multipleOf": 10}, {10, 20, 30}),
    ],
)
def test_integer_respects_bounds(bounds: dict[str, int], allowed: set[int]) -> None:
    schema = {"type": "integer", **bounds}

    values = {_build(schema, seed) for seed in range(50)}

    assert values <= allowed


def test_number_respects_exclusive_bounds() -> None:
    schema = {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 0.001}

    values = [_build(schema, seed) for seed in range(50)]

    for value in values:
        assert 0 < value < 0.001


def test_any_of_takes_non_null_branch() -> None:
    schema = {"anyOf": [{"type": "null"}, {"type": "integer"}]}

    values = [_build(schema, seed) for seed in range(20)]

    for value in values:
        assert isinstance(value, int)


def test_enum_and_const_are_kept() -> None:
    schema = {
        "type": "object",
        "properties": {"level": {"enum": ["easy", "hard", None]}, "version": {"const": 2}},
    }

    value = _build(schema)

    assert value["level"] in ("easy", "hard")
    assert value["version"] == 2


def test_type_list_takes_non_null_type() -> None:
    schema = {"type": ["null", "boolean"]}

    value = _build(schema)

    assert isinstance(value, bool)


def test_nested_references_resolve() -> None:
    schema = {
        "$defs": {
            "Inner": {"type": "object", "properties": {"n": {"type": "integer"}}},
            "Outer": {"type": "object", "properties": {"inner": {"$ref": "#/$defs/Inner"}}},
        },
        "$ref": "#/$defs/Outer",
    }

    value = _build(schema)

    assert isinstance(value["inner"]["n"], int)


def test_recursive_schema_ends() -> None:
    schema = {
        "$defs": {
            "Node": {
                "type": "object",
                "properties": {
                    "children": {"type": "array", "items": {"$ref": "#/$defs/Node"}},
                    "parent": {"anyOf": [{"$ref": "#/$defs/Node"}, {"type": "null"}]},
                },
            }
        },
        "$ref": "#/$defs/Node",
    }

    value = _build(schema)

    assert isinstance(value["children"], list)


def test_all_of_parts_are_merged() -> None:
    schema = {
        "allOf": [
            {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]},
            {"properties": {"b": {"type": "boolean"}}, "required": ["b"]},
        ]
    }

    value = _build(schema)

    assert set(value) == {"a", "b"}


def test_required_name_without_schema_is_filled() -> None:
    schema = {"type": "object", "required": ["note"]}

    value = _build(schema)

    assert isinstance(value["note"], str)


def test_additional_properties_get_an_entry() -> None:
    schema = {"type": "object", "additionalProperties": {"type": "integer"}}

    value = _build(schema)

    assert len(value) == 1
    assert all(isinstance(item, int) for item in value.values())


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "string", "pattern": "^[0-9]{4}$"},
        {"type": "string", "minLength": 5, "maxLength": 2},
        {"type": "integer", "minimum": 5, "maximum": 4},
        {"$ref": "#/$defs/Missing"},
        {"$ref": "https://example.com/schema.json"},
        {"type": "tuple"},
        {"type": "array", "items": {"const": "x"}, "minItems": 2, "uniqueItems": True},
    ],
)
def test_impossible_schema_raises(schema: dict[str, Any]) -> None:
    with pytest.raises(UnsupportedSchemaError):
        _build(schema)


def test_error_names_the_subschema_path() -> None:
    schema = {"type": "object", "properties": {"year": {"type": "string", "pattern": "^1$"}}}

    with pytest.raises(UnsupportedSchemaError) as caught:
        _build(schema)

    assert caught.value.path == "#/properties/year"
