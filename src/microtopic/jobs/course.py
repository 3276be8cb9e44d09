"""Course files: the subjects and topics of a course, turned into one generation request each.

A course file is YAML (the HTTP API takes the same document as JSON):

    course: physics-101            # the course id of every request
    audience: grade 9              # optional, for every topic
    language: en                   # optional, default en
    depth: lite                    # optional, lite or full
    subjects:
      - name: Mechanics
        topics:
          - name: Newton's laws
            microtopics: [Inertia, Force and acceleration]   # optional: skips the planner
          - Kinematics             # a topic given by its name alone

Every invalid field is reported with its path, such as `subjects[1].topics[0].name`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Self

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from microtopic.domain import (
    LANGUAGE_PATTERN,
    Depth,
    GenerationRequest,
    ShortText,
    normalise_title,
)
from microtopic.errors import CourseFileError, field_path

MAX_TOPICS = 1000
"""The maximum number of topics in one course; each topic becomes one job item."""

MAX_PROBLEMS_SHOWN = 10


def _topic_from_name(value: Any) -> Any:
    # A topic may be written as its name alone.
    if isinstance(value, str):
        return {"name": value}
    if isinstance(value, dict | TopicSpec):
        return value
    raise PydanticCustomError(
        "topic_type", "must be a topic name, or a mapping with `name` and optional `microtopics`"
    )


def _first_repeat(names: list[str]) -> tuple[int, int] | None:
    """Return the indexes of the first name that repeats an earlier one, and of that one."""
    first_index: dict[str, int] = {}
    for index, name in enumerate(names):
        key = normalise_title(name)
        if key in first_index:
            return first_index[key], index
        first_index[key] = index
    return None


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TopicSpec(_Spec):
    """A topic of a subject, and optionally the names of its microtopics."""

    name: ShortText
    microtopics: list[ShortText] | None = Field(default=None, min_length=1, max_length=12)

    @field_validator("microtopics")
    @classmethod
    def _microtopics_are_distinct(cls, names: list[str] | None) -> list[str] | None:
        repeat = None if names is None else _first_repeat(names)
        if repeat is not None:
            first, second = repeat
            raise PydanticCustomError(
                "repeated_name",
                "microtopic names must be distinct, but microtopics[{second}] repeats "
                "microtopics[{first}]",
                {"first": first, "second": second},
            )
        return names


class SubjectSpec(_Spec):
    """A subject of a course and its topics."""

    name: ShortText
    topics: list[Annotated[TopicSpec, BeforeValidator(_topic_from_name)]] = Field(min_length=1)

    @field_validator("topics")
    @classmethod
    def _topics_are_distinct(cls, topics: list[TopicSpec]) -> list[TopicSpec]:
        repeat = _first_repeat([topic.name for topic in topics])
        if repeat is not None:
            first, second = repeat
            raise PydanticCustomError(
                "repeated_name",
                "topic names must be distinct within a subject, but topics[{second}] "
                "repeats topics[{first}] ({name})",
                {"first": first, "second": second, "name": topics[first].name},
            )
        return topics


class CourseSpec(_Spec):
    """A course file: the course id, defaults for every topic, and the subjects."""

    course: ShortText
    audience: ShortText | None = None
    language: str = Field(default="en", pattern=LANGUAGE_PATTERN)
    depth: Depth = Depth.LITE
    subjects: list[SubjectSpec] = Field(min_length=1)

    @field_validator("subjects")
    @classmethod
    def _subjects_are_distinct(cls, subjects: list[SubjectSpec]) -> list[SubjectSpec]:
        repeat = _first_repeat([subject.name for subject in subjects])
        if repeat is not None:
            first, second = repeat
            raise PydanticCustomError(
                "repeated_name",
                "subject names must be distinct, but subjects[{second}] repeats "
                "subjects[{first}] ({name})",
                {"first": first, "second": second, "name": subjects[first].name},
            )
        return subjects

    @model_validator(mode="after")
    def _has_few_enough_topics(self) -> Self:
        count = sum(len(subject.topics) for subject in self.subjects)
        if count > MAX_TOPICS:
            raise PydanticCustomError(
                "too_many_topics",
                "a course may have at most {limit} topics, but this one has {count}; "
                "split it into several courses",
                {"limit": MAX_TOPICS, "count": count},
            )
        return self

    def requests(self) -> list[GenerationRequest]:
        """Return one generation request per topic, in the order of the file."""
        return [
            GenerationRequest(
                course_id=self.course,
                subject_name=subject.name,
                topic_name=topic.name,
                microtopics=topic.microtopics,
                audience=self.audience,
                language=self.language,
                depth=self.depth,
            )
            for subject in self.subjects
            for topic in subject.topics
        ]


def load_course(path: Path) -> CourseSpec:
    """Read and validate the course file at `path`; raise `CourseFileError` when it is invalid."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise CourseFileError(f"Cannot read the course file {path}: {exc.strerror}.") from None
    except UnicodeDecodeError:
        raise CourseFileError(f"The course file {path} is not UTF-8 text.") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise CourseFileError(
            f"The course file {path} is not valid YAML{_describe_yaml_error(exc)}."
        ) from None
    return parse_course(data, source=str(path))


def parse_course(data: Any, *, source: str) -> CourseSpec:
    """Validate a course document that has been parsed from YAML or JSON.

    Raises `CourseFileError` naming every invalid field by its path.
    """
    if not isinstance(data, dict):
        raise CourseFileError(
            f"The course file {source} must contain a mapping with `course` and `subjects` "
            "at the top level."
        )
    try:
        return CourseSpec.model_validate(data)
    except ValidationError as exc:
        problems = describe_problems(exc)
        shown = "; ".join(problems[:MAX_PROBLEMS_SHOWN])
        more = len(problems) - MAX_PROBLEMS_SHOWN
        if more > 0:
            shown += f"; and {more} more"
        raise CourseFileError(
            f"The course file {source} is invalid: {shown}.", problems=problems
        ) from None


def describe_problems(exc: ValidationError) -> list[str]:
    """Return each validation error as `path: message`, without the invalid input."""
    return [
        f"{field_path(error['loc'], whole='course')}: {error['msg']}"
        for error in exc.errors(include_input=False, include_url=False)
    ]


def _describe_yaml_error(exc: yaml.YAMLError) -> str:
    if not isinstance(exc, yaml.MarkedYAMLError) or exc.problem_mark is None:
        return ""
    mark = exc.problem_mark
    return f" at line {mark.line + 1}, column {mark.column + 1}: {exc.problem or 'syntax error'}"
