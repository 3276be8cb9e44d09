"""Markdown rendering of a generated topic."""

from __future__ import annotations

import unicodedata

from microtopic.cli.render import topic_to_markdown
from microtopic.domain import Depth, GeneratedTopic, Microtopic, QuizQuestion

QUESTION = QuizQuestion(
    question="What is x if x + 3 = 5?",
    options=["1", "8", "2", "-2"],
    answer_index=2,
    explanation="Subtract 3 from both sides.",
)


def lesson(title: str) -> Microtopic:
    return Microtopic(
        title=title,
        summary=f"{title} in one sentence.",
        explanation="  Undo each operation on both sides.  ",
        key_points=["Keep the balance.", "Undo the last operation first.", "Check the answer."],
        worked_example="x + 3 = 5, so x = 2.",
        misconceptions=["Subtracting on one side only."],
        estimated_minutes=10,
        quiz=[QUESTION, QUESTION.model_copy(update={"answer_index": 0})],
    )


def topic(audience: str | None = None) -> GeneratedTopic:
    return GeneratedTopic(
        course_id="algebra-1",
        subject_name="Mathematics",
        topic_name="Linear equations",
        language="en",
        audience=audience,
        depth=Depth.LITE,
        microtopics=[lesson("One-step equations"), lesson("Two-step equations")],
    )


def test_header_names_subject_and_topic() -> None:
    markdown = topic_to_markdown(topic())

    lines = markdown.splitlines()
    assert lines[0] == "# Mathematics: Linear equations"
    assert lines[2] == "Course: algebra-1 · Language: en"


def test_audience_is_shown_when_given() -> None:
    markdown = topic_to_markdown(topic(audience="grade 9"))

    assert "Course: algebra-1 · Language: en · Audience: grade 9" in markdown


def test_sections_are_numbered() -> None:
    markdown = topic_to_markdown(topic())

    sections = [line for line in markdown.splitlines() if line.startswith("## ")]
    assert sections == ["## 1. One-step equations", "## 2. Two-step equations"]
    assert markdown.count("### Quiz") == 2
    assert "*One-step equations in one sentence.* (10 min)" in markdown


def test_explanation_is_stripped() -> None:
    markdown = topic_to_markdown(topic())

    assert "\nUndo each operation on both sides.\n" in markdown


def test_quiz_letters_options_and_answer() -> None:
    markdown = topic_to_markdown(topic())

    assert "1. What is x if x + 3 = 5?" in markdown
    assert "   A. 1\n   B. 8\n   C. 2\n   D. -2" in markdown
    assert "   Answer: C. Subtract 3 from both sides." in markdown
    assert "   Answer: A. Subtract 3 from both sides." in markdown
    assert markdown.endswith("\n")


def test_control_characters_never_printed() -> None:
    # model_construct skips validation, as for a topic built in code.
    question = QuizQuestion.model_construct(**{**QUESTION.model_dump(), "question": "Why\x08?"})
    unsafe_lesson = Microtopic.model_construct(
        **{
            **lesson("Fractions").model_dump(),
            "title": "\x1b[2JFractions\x07",
            "explanation": "\\begin{align}\b\fegin\r\n\tx\x9b",
            "key_points": ["Parts\x00.", "Numerator\x7f.", "Equal parts."],
            "quiz": [question],
        }
    )
    unsafe_topic = GeneratedTopic.model_construct(
        **{
            **topic().model_dump(),
            "subject_name": "Maths\x1b]0;x\x07",
            "microtopics": [unsafe_lesson],
        }
    )

    markdown = topic_to_markdown(unsafe_topic)

    controls = {char for char in markdown if unicodedata.category(char) == "Cc"}
    assert controls <= {"\n", "\t"}
    assert "## 1. [2JFractions" in markdown
    assert "\\begin{align}egin\n\tx" in markdown
    assert "# Maths]0;x: Linear equations" in markdown
    assert "1. Why?" in markdown
