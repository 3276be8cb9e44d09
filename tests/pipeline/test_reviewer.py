"""The reviewer's rules beyond the schema."""

from __future__ import annotations

import json

from microtopic.domain import MicrotopicDraft, QuizDraft, QuizQuestion, TopicPlan
from microtopic.pipeline.reviewer import review_draft, review_plan, review_quiz
from tests.pipeline.scripted import draft_json, plan_json, quiz_json


def test_distinct_plan_passes() -> None:
    plan = TopicPlan.model_validate_json(plan_json("Halves", "Thirds", "Quarters"))

    problems = review_plan(plan)

    assert problems == []


def test_duplicate_plan_titles_are_found() -> None:
    plan = TopicPlan.model_validate_json(plan_json("Halves", "Thirds", " halves  ", "THIRDS"))

    problems = review_plan(plan)

    assert problems == ["microtopics[].title: items must be distinct, but 2 are repeated"]


def test_good_draft_passes() -> None:
    draft = MicrotopicDraft.model_validate_json(draft_json("Halves"))

    problems = review_draft(draft)

    assert problems == []


def test_repeated_key_points_are_found() -> None:
    points = ["Split into two.", "Both parts equal.", "split  into TWO."]
    draft = MicrotopicDraft.model_validate_json(draft_json("Halves", key_points=points))

    problems = review_draft(draft)

    assert problems == ["key_points: items must be distinct, but 1 are repeated"]


def test_repeated_misconceptions_are_found() -> None:
    misconceptions = ["A half is always small.", "a half is always small."]
    draft = MicrotopicDraft.model_validate_json(draft_json("Halves", misconceptions=misconceptions))

    problems = review_draft(draft)

    assert problems == ["misconceptions: items must be distinct, but 1 are repeated"]


def test_explanation_equal_to_summary_is_found() -> None:
    draft = MicrotopicDraft.model_validate_json(
        draft_json(
            "Halves",
            summary="A half is one of two equal parts.",
            explanation="A half is\none of two EQUAL parts.",
        )
    )

    problems = review_draft(draft)

    assert problems == ["explanation: must explain more than the summary says"]


def test_draft_problems_accumulate() -> None:
    points = ["Same point.", "Same point.", "Other point."]
    draft = MicrotopicDraft.model_validate_json(
        draft_json("Halves", key_points=points, explanation="Halves in one sentence.")
    )

    problems = review_draft(draft)

    assert len(problems) == 2


def test_distinct_quiz_passes() -> None:
    quiz = QuizDraft.model_validate_json(quiz_json(4))

    problems = review_quiz(quiz)

    assert problems == []


def test_repeated_questions_are_found() -> None:
    questions = json.loads(quiz_json(3))["questions"]
    questions[2]["question"] = questions[0]["question"].upper()
    quiz = QuizDraft.model_validate({"questions": questions})

    problems = review_quiz(quiz)

    assert problems == ["questions[].question: items must be distinct, but 1 are repeated"]


def test_answer_outside_options_is_found() -> None:
    # The schema already rejects this; the rule guards documents built without validation.
    question = QuizQuestion.model_construct(
        question="Which is a half?",
        options=["1/2", "1/3"],
        answer_index=3,
        explanation="One of two equal parts.",
    )
    other = QuizQuestion.model_validate(json.loads(quiz_json(1))["questions"][0])
    quiz = QuizDraft.model_construct(questions=[other, question])

    problems = review_quiz(quiz)

    assert problems == ["questions[1].answer_index: must point at one of the options"]


def test_question_count_is_checked() -> None:
    quiz = QuizDraft.model_validate_json(quiz_json(3))

    problems = review_quiz(quiz, question_count=2)

    assert problems == ["questions: must contain exactly 2 questions, not 3"]


def test_matching_question_count_passes() -> None:
    quiz = QuizDraft.model_validate_json(quiz_json(4))

    problems = review_quiz(quiz, question_count=4)

    assert problems == []
