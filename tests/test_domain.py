"""Validation of generation requests and of the documents the pipeline produces."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from microtopic.domain import (
    Depth,
    GeneratedTopic,
    GenerationRequest,
    MicrotopicDraft,
    QuizQuestion,
    TopicPlan,
)


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


ONE_LINE_FIELDS = ("course_id", "subject_name", "topic_name", "audience")
CONTROL_CHARACTERS = ("\x00", "\n", "\t", "\x1b", "\x7f", "\x85")


@pytest.mark.parametrize("value", ["yes", "true", 1, "1", None])
def test_is_retry_must_be_boolean(value: Any) -> None:
    fields = request_fields(is_retry=value)

    with pytest.raises(ValidationError) as caught:
        GenerationRequest.model_validate(fields)

    assert error_locations(caught) == [("is_retry",)]


def test_is_retry_accepts_json_boolean() -> None:
    request = GenerationRequest.model_validate_json(
        '{"course_id": "c", "subject_name": "s", "topic_name": "t", "is_retry": true}'
    )

    assert request.is_retry is True


@pytest.mark.parametrize("field", ONE_LINE_FIELDS)
@pytest.mark.parametrize("character", CONTROL_CHARACTERS)
def test_control_character_is_rejected(field: str, character: str) -> None:
    fields = request_fields(**{field: f"Lin{character}ear"})

    with pytest.raises(ValidationError) as caught:
        GenerationRequest.model_validate(fields)

    assert error_locations(caught) == [(field,)]
    assert f"U+{ord(character):04X} at index 3" in str(caught.value)


@pytest.mark.parametrize("character", CONTROL_CHARACTERS)
def test_control_character_in_microtopic_rejected(character: str) -> None:
    fields = request_fields(microtopics=["Slope", f"Inter{character}cepts"])

    with pytest.raises(ValidationError) as caught:
        GenerationRequest.model_validate(fields)

    assert error_locations(caught) == [("microtopics", 1)]


BIDI_CONTROLS = tuple(chr(code) for code in [*range(0x202A, 0x202F), *range(0x2066, 0x206A)])


@pytest.mark.parametrize("field", ONE_LINE_FIELDS)
@pytest.mark.parametrize("character", BIDI_CONTROLS, ids=lambda char: f"U+{ord(char):04X}")
def test_bidi_control_is_rejected(field: str, character: str) -> None:
    fields = request_fields(**{field: f"abc{character}fed"})

    with pytest.raises(ValidationError) as caught:
        GenerationRequest.model_validate(fields)

    assert error_locations(caught) == [(field,)]
    assert caught.value.errors()[0]["type"] == "bidi_control_character"
    assert f"contains U+{ord(character):04X} at index 3" in str(caught.value)


def test_bidi_control_in_microtopic_rejected() -> None:
    fields = request_fields(microtopics=["Slope", "Inter\u202ecepts"])

    with pytest.raises(ValidationError) as caught:
        GenerationRequest.model_validate(fields)

    assert error_locations(caught) == [("microtopics", 1)]


@pytest.mark.parametrize(
    "text",
    ["الجبر الخطي", "אלגברה ליניארית", "Algebra \u200fالجبر\u200e (1)", "\u061cالعدد"],
    ids=["arabic", "hebrew", "mixed-with-marks", "arabic-letter-mark"],
)
def test_right_to_left_text_round_trips(text: str) -> None:
    request = GenerationRequest.model_validate(request_fields(topic_name=text, microtopics=[text]))

    parsed = GenerationRequest.model_validate_json(request.model_dump_json())

    assert parsed.topic_name == text
    assert parsed.microtopics == [text]


def test_control_character_in_language_rejected() -> None:
    fields = request_fields(language="en\x00")

    with pytest.raises(ValidationError) as caught:
        GenerationRequest.model_validate(fields)

    assert error_locations(caught) == [("language",)]


def test_microtopics_differing_in_spacing_rejected() -> None:
    fields = request_fields(microtopics=["Linear  equations", "linear equations"])

    with pytest.raises(ValidationError) as caught:
        GenerationRequest.model_validate(fields)

    assert error_locations(caught) == [("microtopics",)]


def draft_fields(**changes: Any) -> dict[str, Any]:
    return {
        "title": "Fractions",
        "summary": "Fractions name parts of a whole.",
        "explanation": "A fraction $\\frac{a}{b}$ splits a whole into b parts.",
        "key_points": ["Parts of a whole.", "Numerator over denominator.", "Equal parts."],
        "worked_example": "1. Split.\n2. Count.",
        "misconceptions": ["A bigger denominator is not a bigger part."],
        "estimated_minutes": 5,
        **changes,
    }


def test_draft_drops_control_characters() -> None:
    fields = draft_fields(
        title="\x1b[31mFractions\x07",
        summary="Fractions\x00 name parts.",
        explanation="\\begin{align}\b\fegin\n\tx\r\n",
        key_points=["Parts\x85.", "Numerator\x7f.", "Equal\x0b parts."],
        worked_example="1.\x08 Split.",
        misconceptions=["Bigger\x1f is not more."],
    )

    draft = MicrotopicDraft.model_validate(fields)

    assert draft.title == "[31mFractions"
    assert draft.summary == "Fractions name parts."
    assert draft.explanation == "\\begin{align}egin\n\tx\n"
    assert draft.key_points == ["Parts.", "Numerator.", "Equal parts."]
    assert draft.worked_example == "1. Split."
    assert draft.misconceptions == ["Bigger is not more."]


def test_quiz_and_plan_drop_control_characters() -> None:
    question = QuizQuestion.model_validate(
        question_fields(question="Capital\b?", options=["Paris\f", "Lyon", "Nice", "Lille"])
    )
    plan = TopicPlan.model_validate(
        {
            "microtopics": [
                {"title": f"Part\x0c {number}", "summary": "A\x00 part."} for number in (1, 2, 3)
            ]
        }
    )

    assert question.question == "Capital?"
    assert question.options[0] == "Paris"
    assert [item.title for item in plan.microtopics] == ["Part 1", "Part 2", "Part 3"]
    assert plan.microtopics[0].summary == "A part."


def test_generated_title_becomes_one_line() -> None:
    fields = draft_fields(title=".5}]\n```\n\n1.  The\tcontent")

    draft = MicrotopicDraft.model_validate(fields)

    assert draft.title == ".5}] ``` 1. The content"


def test_only_control_characters_is_empty() -> None:
    with pytest.raises(ValidationError) as caught:
        MicrotopicDraft.model_validate(draft_fields(title="\b\f", explanation="\x00"))

    assert error_locations(caught) == [("title",), ("explanation",)]


def test_cleaning_leaves_json_schema_alone() -> None:
    schema = MicrotopicDraft.model_json_schema()

    title = schema["properties"]["title"]
    explanation = schema["properties"]["explanation"]

    assert title == {"maxLength": 200, "minLength": 1, "title": "Title", "type": "string"}
    assert explanation["type"] == "string"
    assert explanation["maxLength"] == 6000


def topic_fields(*titles: str) -> dict[str, Any]:
    lesson = {**draft_fields(), "quiz": [question_fields(), question_fields()]}
    return {
        "course_id": "algebra-1",
        "subject_name": "Mathematics",
        "topic_name": "Linear equations",
        "language": "en",
        "audience": None,
        "depth": "lite",
        "microtopics": [{**lesson, "title": title} for title in titles],
    }


def test_topic_titles_must_be_distinct() -> None:
    fields = topic_fields("Slope", "Algebra: common pitfalls", "algebra:  Common pitfalls")

    with pytest.raises(ValidationError) as caught:
        GeneratedTopic.model_validate(fields)

    assert error_locations(caught) == [("microtopics",)]
    assert "1 are repeated" in str(caught.value)


def test_topic_with_distinct_titles_is_valid() -> None:
    topic = GeneratedTopic.model_validate(topic_fields("Slope", "Intercepts"))

    assert [item.title for item in topic.microtopics] == ["Slope", "Intercepts"]
