"""The reviewer: rules a lesson must meet beyond its schema.

The schema already checks shapes and ranges (4 options, `answer_index` in 0..3,
distinct options). These rules catch what a schema cannot: repeated items,
an explanation that only restates the summary, a plan with duplicate titles.
Each rule returns sentences that the rewrite request quotes to the model.
"""

from __future__ import annotations

from collections.abc import Iterable

from microtopic.domain import MicrotopicDraft, QuizDraft, TopicPlan


def review_plan(plan: TopicPlan) -> list[str]:
    """Return the problems of a planner's output."""
    return _repeated("microtopics[].title", (item.title for item in plan.microtopics))


def review_draft(draft: MicrotopicDraft) -> list[str]:
    """Return the problems of a writer's output."""
    problems = [
        *_repeated("key_points", draft.key_points),
        *_repeated("misconceptions", draft.misconceptions),
    ]
    if _normalise(draft.explanation) == _normalise(draft.summary):
        problems.append("explanation: must explain more than the summary says")
    return problems


def review_quiz(quiz: QuizDraft, *, question_count: int | None = None) -> list[str]:
    """Return the problems of a quiz author's output, checking `question_count` when given.

    The schema sent to the model fixes the count, but replies are validated against
    `QuizDraft`, which allows 2 to 5 questions, so the count is checked here.
    """
    problems = _repeated("questions[].question", (q.question for q in quiz.questions))
    if question_count is not None and len(quiz.questions) != question_count:
        problems.append(
            f"questions: must contain exactly {question_count} questions, not {len(quiz.questions)}"
        )
    for index, question in enumerate(quiz.questions):
        if not 0 <= question.answer_index < len(question.options):
            problems.append(f"questions[{index}].answer_index: must point at one of the options")
    return problems


def _repeated(field: str, values: Iterable[str]) -> list[str]:
    seen: set[str] = set()
    repeated: list[str] = []
    for value in values:
        key = _normalise(value)
        if key in seen and key not in repeated:
            repeated.append(key)
        seen.add(key)
    if not repeated:
        return []
    return [f"{field}: items must be distinct, but {len(repeated)} are repeated"]


def _normalise(text: str) -> str:
    return " ".join(text.casefold().split())
