"""Valid domain objects and records for the storage tests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from microtopic.domain import Depth, GeneratedTopic, GenerationRequest, Microtopic, QuizQuestion
from microtopic.storage import LlmCallRecord, StepRecord

T0 = datetime(2025, 3, 14, 9, 26, 53, 589_000, tzinfo=UTC)


def at(seconds: float) -> datetime:
    """Return the time `seconds` after T0."""
    return T0 + timedelta(seconds=seconds)


def make_request(
    *, course_id: str = "physics-101", topic_name: str = "Newton's laws"
) -> GenerationRequest:
    return GenerationRequest(
        course_id=course_id,
        subject_name="Mechanics",
        topic_name=topic_name,
        audience="grade 9",
    )


def make_topic(
    *,
    topic_name: str = "Newton's laws",
    title: str = "The first law",
    explanation: str = "A body keeps its velocity unless a net force acts on it.",
) -> GeneratedTopic:
    """Return a topic with one microtopic, 3 key points and 2 quiz questions."""
    quiz = [
        QuizQuestion(
            question="What does a body do when no net force acts on it?",
            options=["Keeps its velocity", "Stops", "Speeds up", "Turns"],
            answer_index=0,
            explanation="With no net force there is no acceleration.",
        ),
        QuizQuestion(
            question="Which quantity measures inertia?",
            options=["Mass", "Speed", "Force", "Energy"],
            answer_index=0,
            explanation="Mass is how strongly a body resists changes of velocity.",
        ),
    ]
    microtopic = Microtopic(
        title=title,
        summary="Bodies keep moving as they are unless a net force acts.",
        explanation=explanation,
        key_points=[
            "Inertia is the tendency to keep the current velocity.",
            "Rest is a velocity of zero.",
            "Only a net force changes velocity.",
        ],
        worked_example="A puck on ice slides far because friction is small.",
        misconceptions=["Moving bodies need a force to keep moving."],
        estimated_minutes=8,
        quiz=quiz,
    )
    return GeneratedTopic(
        course_id="physics-101",
        subject_name="Mechanics",
        topic_name=topic_name,
        language="en",
        audience="grade 9",
        depth=Depth.LITE,
        microtopics=[microtopic],
    )


def make_steps() -> list[StepRecord]:
    return [
        StepRecord(name="planner", started_at=at(0.1), finished_at=at(1.3)),
        StepRecord(name="writer:1", started_at=at(1.3), finished_at=at(4.0)),
    ]


def make_call(
    *,
    key_name: str = "east",
    outcome: str = "success",
    started_at: datetime = T0,
    attempt: int = 1,
    step: str = "planner",
) -> LlmCallRecord:
    succeeded = outcome == "success"
    return LlmCallRecord(
        step=step,
        key_name=key_name,
        deployment="gpt-4o-mini",
        attempt=attempt,
        latency_ms=812.25,
        prompt_tokens=420 if succeeded else 0,
        completion_tokens=96 if succeeded else 0,
        outcome=outcome,
        started_at=started_at,
    )
