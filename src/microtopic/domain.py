"""The lesson domain: what a user asks for and what the pipeline produces.

These pydantic models are the contract of the whole service. Their JSON Schema is
what the LLM is asked to produce, and nothing is stored or returned unless it
validates against them.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

ShortText = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
Sentence = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=400)]

LANGUAGE_PATTERN = r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8})?$"


class Depth(StrEnum):
    """How much a lesson covers: `lite` is short, `full` goes further."""

    LITE = "lite"
    FULL = "full"


class GenerationRequest(BaseModel):
    """A request to generate the microtopic lessons of one topic."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    course_id: ShortText
    subject_name: ShortText
    topic_name: ShortText
    microtopics: list[ShortText] | None = Field(
        default=None,
        min_length=1,
        max_length=12,
        description="Microtopic names to write; when absent the planner proposes 3 to 8.",
    )
    audience: ShortText | None = Field(default=None, description='For example "grade 9".')
    language: str = Field(default="en", pattern=LANGUAGE_PATTERN, description="BCP 47 tag.")
    depth: Depth = Depth.LITE
    is_retry: bool = Field(
        default=False,
        description="Set when the client retries a failed request; it gets the retry strategy.",
    )

    @field_validator("microtopics")
    @classmethod
    def _microtopics_are_distinct(cls, names: list[str] | None) -> list[str] | None:
        if names is None:
            return None
        seen = {name.casefold() for name in names}
        if len(seen) != len(names):
            raise ValueError("microtopic names must be distinct")
        return names


class PlannedMicrotopic(BaseModel):
    """One entry of the planner's output."""

    title: ShortText
    summary: Sentence


class TopicPlan(BaseModel):
    """The planner's output: the microtopics a topic splits into."""

    microtopics: list[PlannedMicrotopic] = Field(min_length=3, max_length=8)


class QuizQuestion(BaseModel):
    """A multiple-choice question with exactly one correct option."""

    question: Sentence
    options: list[ShortText] = Field(
        min_length=4, max_length=4, json_schema_extra={"uniqueItems": True}
    )
    answer_index: int = Field(ge=0, le=3, description="Index of the correct option.")
    explanation: Sentence = Field(description="Why the correct option is right, briefly.")

    @field_validator("options")
    @classmethod
    def _options_are_distinct(cls, options: list[str]) -> list[str]:
        if len({option.casefold() for option in options}) != len(options):
            raise ValueError("the 4 options must be distinct")
        return options


class QuizDraft(BaseModel):
    """The quiz author's output for one microtopic."""

    questions: list[QuizQuestion] = Field(min_length=2, max_length=5)


class MicrotopicDraft(BaseModel):
    """The writer's output for one microtopic: everything but the quiz."""

    title: ShortText
    summary: Sentence
    explanation: str = Field(min_length=1, max_length=6000, description="Markdown.")
    key_points: list[Sentence] = Field(min_length=3, max_length=6)
    worked_example: str = Field(min_length=1, max_length=3000, description="Markdown.")
    misconceptions: list[Sentence] = Field(min_length=1, max_length=5)
    estimated_minutes: int = Field(ge=1, le=60)


class Microtopic(MicrotopicDraft):
    """A finished microtopic lesson."""

    quiz: list[QuizQuestion] = Field(min_length=2, max_length=5)


class GeneratedTopic(BaseModel):
    """A topic with all its finished microtopic lessons."""

    course_id: str
    subject_name: str
    topic_name: str
    language: str
    audience: str | None
    depth: Depth
    microtopics: list[Microtopic] = Field(min_length=1)
