"""Course files: parsing, validation, and an error that names each invalid field by its path."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from microtopic.domain import Depth
from microtopic.errors import CourseFileError, field_path
from microtopic.jobs.course import MAX_TOPICS, load_course, parse_course

EXAMPLE_COURSE = Path(__file__).parents[2] / "examples" / "course.yaml"


def course(*subjects: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {"course": "physics-101", "subjects": list(subjects), **fields}


def subject(name: str, *topics: Any) -> dict[str, Any]:
    return {"name": name, "topics": list(topics)}


def problems_of(data: Any) -> list[str]:
    with pytest.raises(CourseFileError) as caught:
        parse_course(data, source="course.yaml")
    return caught.value.problems


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "course.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_example_course_is_valid() -> None:
    spec = load_course(EXAMPLE_COURSE)

    requests = spec.requests()
    assert spec.course == "physics-101"
    assert len(requests) == 5
    assert requests[0].microtopics == ["Inertia", "Force and acceleration", "Action and reaction"]
    assert requests[1].microtopics is None


def test_topics_become_requests_in_order() -> None:
    data = course(
        subject("Mechanics", "Kinematics", {"name": "Forces", "microtopics": ["Friction"]}),
        subject("Waves", "Sound"),
        audience="grade 9",
        language="de",
        depth="full",
    )

    requests = parse_course(data, source="course.yaml").requests()

    assert [(r.subject_name, r.topic_name) for r in requests] == [
        ("Mechanics", "Kinematics"),
        ("Mechanics", "Forces"),
        ("Waves", "Sound"),
    ]
    assert requests[1].microtopics == ["Friction"]
    assert {r.course_id for r in requests} == {"physics-101"}
    assert {r.audience for r in requests} == {"grade 9"}
    assert {r.language for r in requests} == {"de"}
    assert {r.depth for r in requests} == {Depth.FULL}


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        pytest.param(
            course(subject("Mechanics", "Kinematics"), subject("Waves", {"title": "Sound"})),
            ["subjects[1].topics[0].name: Field required", "subjects[1].topics[0].title:"],
            id="missing-topic-name",
        ),
        pytest.param(
            course(subject("Mechanics", "")),
            ["subjects[0].topics[0].name: String should have at least 1 character"],
            id="empty-topic-name",
        ),
        pytest.param(
            course(subject("Mechanics", 7)),
            ["subjects[0].topics[0]: must be a topic name, or a mapping"],
            id="topic-of-wrong-type",
        ),
        pytest.param(
            course(subject("Mechanics")),
            ["subjects[0].topics: List should have at least 1 item"],
            id="subject-without-topics",
        ),
        pytest.param(
            {"subjects": [subject("Mechanics", "Kinematics")]},
            ["course: Field required"],
            id="missing-course",
        ),
        pytest.param(course(), ["subjects: List should have at least 1 item"], id="no-subjects"),
        pytest.param(
            course(subject("Mechanics", "Kinematics"), subject("mechanics ", "Sound")),
            ["subjects: subject names must be distinct, but subjects[1] repeats subjects[0]"],
            id="repeated-subject",
        ),
        pytest.param(
            course(subject("Mechanics", "Kinematics", "kinematics")),
            ["subjects[0].topics: topic names must be distinct within a subject, but topics[1]"],
            id="repeated-topic",
        ),
        pytest.param(
            course(subject("Mechanics", {"name": "Forces", "microtopics": ["A", "a"]})),
            ["subjects[0].topics[0].microtopics: microtopic names must be distinct"],
            id="repeated-microtopic",
        ),
        pytest.param(
            course(subject("Mechanics", {"name": "Forces", "microtopics": []})),
            ["subjects[0].topics[0].microtopics: List should have at least 1 item"],
            id="empty-microtopics",
        ),
        pytest.param(
            course(subject("Mechanics", "Kinematics\nand more")),
            ["subjects[0].topics[0].name: must be one line of text"],
            id="line-break-in-name",
        ),
        pytest.param(
            course(subject("Mechanics", "Kinematics"), depth="deep", langauge="en"),
            ["depth: Input should be 'lite' or 'full'", "langauge: Extra inputs are not permitted"],
            id="bad-course-fields",
        ),
    ],
)
def test_invalid_field_is_named_by_path(data: dict[str, Any], expected: list[str]) -> None:
    problems = problems_of(data)

    for start in expected:
        assert any(problem.startswith(start) for problem in problems), (start, problems)


def test_every_problem_is_reported() -> None:
    data = course(subject("Mechanics", {"title": "x"}), subject("Waves", ""), depth="deep")

    problems = problems_of(data)

    assert len(problems) == 4


def test_too_many_topics_are_rejected() -> None:
    topics = [f"Topic {index}" for index in range(MAX_TOPICS + 1)]

    problems = problems_of(course(subject("Mechanics", *topics)))

    assert problems == [
        f"course: a course may have at most {MAX_TOPICS} topics, but this one has "
        f"{MAX_TOPICS + 1}; split it into several courses"
    ]


def test_message_names_file_and_fields(tmp_path: Path) -> None:
    path = write(tmp_path, "course: c\nsubjects:\n  - name: A\n    topics:\n      - name: ''\n")

    with pytest.raises(CourseFileError) as caught:
        load_course(path)

    assert caught.value.code == "invalid_course"
    assert str(path) in caught.value.message
    assert "subjects[0].topics[0].name" in caught.value.message


def test_yaml_syntax_error_gives_position(tmp_path: Path) -> None:
    path = write(tmp_path, "course: c\nsubjects: [\n")

    with pytest.raises(CourseFileError) as caught:
        load_course(path)

    assert "not valid YAML at line 3" in caught.value.message


def test_top_level_list_is_rejected(tmp_path: Path) -> None:
    path = write(tmp_path, "- course: c\n")

    with pytest.raises(CourseFileError) as caught:
        load_course(path)

    assert "must contain a mapping" in caught.value.message


def test_missing_file_is_reported(tmp_path: Path) -> None:
    with pytest.raises(CourseFileError) as caught:
        load_course(tmp_path / "absent.yaml")

    assert "Cannot read the course file" in caught.value.message


def test_invalid_input_is_not_echoed() -> None:
    problems = problems_of(course(subject("Mechanics", "x" * 300)))

    assert all("xxxx" not in problem for problem in problems)


@pytest.mark.parametrize(
    ("location", "path"),
    [
        (("subjects", 1, "topics", 0, "name"), "subjects[1].topics[0].name"),
        (("course",), "course"),
        ((), "course"),
        (("subjects", 0), "subjects[0]"),
    ],
)
def test_field_path_formats_location(location: tuple[int | str, ...], path: str) -> None:
    assert field_path(location, whole="course") == path
