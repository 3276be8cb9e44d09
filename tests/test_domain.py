"""Validation of generation requests and of the documents the pipeline produces."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from microtopic.domain import Depth, GenerationRequest, QuizQuestion


def request_fields(**changes: Any) -> dict[str, Any]:
    return {
        "course_id": "algebra-1",
        "subject_name": "Mathematics",
        "topic_name": "Linear equations",
        **changes,
    }


def question_fields(**changes: Any) -> dict[str, Any]:
    return {
        "question": "What is the capital of France?",
        "options": ["Paris", "Lyon", "Nice", "Lille"],
        "answer_index": 0,
        "explanation": "Paris has been the capital since the tenth century.",
        **changes,
    }


def error_locations(caught: pytest.ExceptionInfo[ValidationError]) -> list[tuple[Any, ...]]:
    return [tuple(error["loc"]) for error in caught.value.errors()]


def test_request_defaults() -> None:
    request = GenerationRequest.model_validate(request_fields())

    assert request.language == "en"
    assert request.depth is Depth.LITE
    assert request.microtopics is None
    assert request.audience is None
    assert request.is_retry is False


def test_request_strips_surrounding_whitespace() -> None:
    request = GenerationRequest.model_validate(request_fields(topic_name="  Fractions \n"))

    assert request.topic_name == "Fractions"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("topic_name", ""),
        ("topic_name", "   \t\n"),
        ("topic_name", "x" * 20_000),
        ("subject_name", 42),
        ("course_id", None),
        ("language", "english"),
        ("language", "EN"),
        ("language", "en_US"),
        ("depth", "deep"),
        ("microtopics", []),
        ("microtopics", ["Slope", "slope"]),
    ],
)
def test_invalid_request_field_is_named(field: str, value: Any) -> None:
    fields = request_fields(**{field: value})

    with pytest.raises(ValidationError) as caught:
        GenerationRequest.model_validate(fields)

    assert error_locations(caught) == [(field,)]


def test_unknown_request_field_is_named() -> None:
    fields = request_fields(priority="high")

    with pytest.raises(ValidationError) as caught:
        GenerationRequest.model_validate(fields)

    assert error_locations(caught) == [("priority",)]


@pytest.mark.parametrize("language", ["en", "pt-BR", "zh-Hans", "fil"])
def test_language_tag_is_accepted(language: str) -> None:
    request = GenerationRequest.model_validate(request_fields(language=language))

    assert request.language == language


def test_quiz_question_is_valid() -> None:
    question = QuizQuestion.model_validate(question_fields())

    assert question.options[question.answer_index] == "Paris"


@pytest.mark.parametrize(
    "options",
    [
        ["Paris", "paris", "Nice", "Lille"],
        ["Paris", "Lyon", "LYON", "Lille"],
        ["Paris", "Lyon", "Nice", " Paris "],
    ],
)
def test_duplicate_options_are_rejected(options: list[str]) -> None:
    fields = question_fields(options=options)

    with pytest.raises(ValidationError) as caught:
        QuizQuestion.model_validate(fields)

    assert error_locations(caught) == [("options",)]
    assert "distinct" in str(caught.value)


@pytest.mark.parametrize("answer_index", [-1, 4])
def test_answer_index_out_of_range_rejected(answer_index: int) -> None:
    fields = question_fields(answer_index=answer_index)

    with pytest.raises(ValidationError) as caught:
        QuizQuestion.model_validate(fields)

    assert error_locations(caught) == [("answer_index",)]


@pytest.mark.parametrize("options", [["Paris", "Lyon", "Nice"], ["A", "B", "C", "D", "E"]])
def test_option_count_must_be_four(options: list[str]) -> None:
    fields = question_fields(options=options)

    with pytest.raises(ValidationError) as caught:
        QuizQuestion.model_validate(fields)

    assert error_locations(caught) == [("options",)]
