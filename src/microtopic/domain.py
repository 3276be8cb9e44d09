r"""The lesson domain: what a user asks for and what the pipeline produces.

These pydantic models are the contract of the whole service. Their JSON Schema is
what the LLM is asked to produce, and nothing is stored or returned unless it
validates against them.

Two rules keep control characters out. A request field is one line of text, so a
control character in it (NUL, a line break, ESC, DEL or a C1 control) is rejected:
it is never meaningful, and PostgreSQL cannot store NUL. So is a bidirectional
embedding, override or isolate control (U+202A to U+202E, U+2066 to U+2069): it
reorders how the text around it is displayed, so a name could show in the dashboard
or a terminal as other than it is. Right-to-left letters carry their own direction
and need none of them. Generated text is cleaned
instead, because small models emit JSON escapes such as `\b` and `\f` where they
meant LaTeX (`\begin`, `\frac`): every control character except line feed and
tab is dropped before the other checks run. Titles and quiz options are also
made one line, with each run of whitespace replaced by one space, so a title
cannot break the Markdown heading it is printed in.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
)
from pydantic_core import PydanticCustomError

# Unicode's Cc category: C0 (U+0000 to U+001F), DEL and C1 (U+0080 to U+009F).
_CONTROL_CHARACTER = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_CONTROL_CHARACTER_BUT_LINE_FEED_AND_TAB = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
# The bidirectional embedding and override controls LRE, RLE, PDF, LRO and RLO, and the
# isolates LRI, RLI, FSI and PDI. The marks LRM, RLM and ALM are allowed.
_BIDI_CONTROL = re.compile(r"[\u202a-\u202e\u2066-\u2069]")


def _reject_control_characters(text: str) -> str:
    match = _CONTROL_CHARACTER.search(text)
    if match is not None:
        raise PydanticCustomError(
            "control_character",
            "must be one line of text without control characters, but contains "
            "{character} at index {position}",
            {"character": f"U+{ord(match.group()):04X}", "position": match.start()},
        )
    match = _BIDI_CONTROL.search(text)
    if match is not None:
        raise PydanticCustomError(
            "bidi_control_character",
            "must not contain bidirectional embedding, override or isolate controls "
            "(U+202A to U+202E, U+2066 to U+2069), but contains {character} at index "
            "{position}; right-to-left text needs none of them",
            {"character": f"U+{ord(match.group()):04X}", "position": match.start()},
        )
    return text


def drop_control_characters(text: str) -> str:
    """Return `text` without its control characters other than line feed and tab."""
    return _CONTROL_CHARACTER_BUT_LINE_FEED_AND_TAB.sub("", text)


def _clean_if_text(value: Any) -> Any:
    # Anything else is left for the type check to reject.
    return drop_control_characters(value) if isinstance(value, str) else value


def _clean_to_one_line_if_text(value: Any) -> Any:
    return " ".join(drop_control_characters(value).split()) if isinstance(value, str) else value


# A validator placed last in `Annotated` wraps the ones before it, so cleaning runs first.
_Cleaned = BeforeValidator(_clean_if_text)
_CleanedToOneLine = BeforeValidator(_clean_to_one_line_if_text)

# Text from a request: one line, never cleaned, rejected when it has a control character.
# (pydantic already rejects unpaired surrogates, which no UTF-8 database can store.)
ShortText = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=200),
    AfterValidator(_reject_control_characters),
]
# Text a model wrote, cleaned of control characters before it is checked. A title or a
# quiz option is one line, so its line breaks and runs of spaces become one space.
GeneratedShortText = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200), _CleanedToOneLine
]
Sentence = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=400), _Cleaned
]
Markdown = Annotated[str, _Cleaned]

LANGUAGE_PATTERN = r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8})?$"


def normalise_title(title: str) -> str:
    """Return the form in which two titles are compared: case-folded, spaces collapsed."""
    return " ".join(title.casefold().split())


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
        strict=True,
        description="Set when the client retries a failed request: it gets the retry "
        "strategy, and a seeded model samples differently from the failed attempt.",
    )

    @field_validator("microtopics")
    @classmethod
    def _microtopics_are_distinct(cls, names: list[str] | None) -> list[str] | None:
        if names is None:
            return None
        seen = {normalise_title(name) for name in names}
        if len(seen) != len(names):
            raise ValueError("microtopic names must be distinct")
        return names


class PlannedMicrotopic(BaseModel):
    """One entry of the planner's output."""

    title: GeneratedShortText
    summary: Sentence


class TopicPlan(BaseModel):
    """The planner's output: the microtopics a topic splits into."""

    microtopics: list[PlannedMicrotopic] = Field(min_length=3, max_length=8)


class QuizQuestion(BaseModel):
    """A multiple-choice question with exactly one correct option."""

    question: Sentence
    options: list[GeneratedShortText] = Field(
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

    title: GeneratedShortText
    summary: Sentence
    explanation: Markdown = Field(min_length=1, max_length=6000, description="Markdown.")
    key_points: list[Sentence] = Field(min_length=3, max_length=6)
    worked_example: Markdown = Field(min_length=1, max_length=3000, description="Markdown.")
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

    @field_validator("microtopics")
    @classmethod
    def _titles_are_distinct(cls, microtopics: list[Microtopic]) -> list[Microtopic]:
        titles = [normalise_title(item.title) for item in microtopics]
        repeated = len(titles) - len(set(titles))
        if repeated:
            raise ValueError(f"microtopic titles must be distinct, but {repeated} are repeated")
        return microtopics
