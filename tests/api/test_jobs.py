"""The job routes over HTTP, run by the app's in-process runner against the simulator."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from microtopic.api.jobs import JOBS_PATH
from microtopic.api.routes import PREFIX
from microtopic.domain import GeneratedTopic
from tests.api.support import CLIENT_BODY, count_rows

COURSES_PATH = f"{PREFIX}/courses"

COURSE_BODY: dict[str, Any] = {
    "course": "physics-101",
    "subjects": [
        {
            "name": "Mechanics",
            "topics": [
                {"name": "Newton's laws", "microtopics": ["Inertia"]},
                {"name": "Kinematics", "microtopics": ["Velocity"]},
            ],
        },
        {"name": "Waves", "topics": [{"name": "Sound", "microtopics": ["Pitch"]}]},
    ],
}
FINAL_STATUSES = {"succeeded", "failed", "partially_failed", "cancelled"}


async def finished_job(
    client: httpx.AsyncClient, job_id: str, *, results: bool = True, timeout_s: float = 30.0
) -> dict[str, Any]:
    """Poll the job until its status is final, and return it."""
    deadline = time.monotonic() + timeout_s
    while True:
        response = await client.get(
            f"{JOBS_PATH}/{job_id}", params={"results": "true" if results else "false"}
        )
        assert response.status_code == 200, response.text
        job: dict[str, Any] = response.json()["job"]
        if job["status"] in FINAL_STATUSES:
            return job
        assert time.monotonic() < deadline, f"the job is still {job['status']}: {job['progress']}"
        await asyncio.sleep(0.05)


async def test_generation_job_is_accepted(client: httpx.AsyncClient) -> None:
    response = await client.post(JOBS_PATH, json=CLIENT_BODY)

    assert response.status_code == 202
    body = response.json()
    assert body["success"] is True
    job = body["job"]
    assert job["kind"] == "generation"
    assert job["status"] in ("queued", "running")
    assert job["progress"]["total"] == 1
    assert response.headers["location"] == f"{JOBS_PATH}/{job['id']}"


async def test_generation_job_returns_topic(client: httpx.AsyncClient) -> None:
    submitted = (await client.post(JOBS_PATH, json=CLIENT_BODY)).json()["job"]

    job = await finished_job(client, submitted["id"])

    assert job["status"] == "succeeded"
    assert job["finished_at"] is not None
    item = job["items"][0]
    assert item["status"] == "succeeded"
    assert item["attempts"] == 1
    assert item["request_id"]
    assert item["error"] is None
    topic = GeneratedTopic.model_validate(item["data"])
    assert topic.topic_name == "Algebra"


async def test_course_job_reports_progress(client: httpx.AsyncClient) -> None:
    response = await client.post(COURSES_PATH, json=COURSE_BODY)
    job_id = response.json()["job"]["id"]

    job = await finished_job(client, job_id, results=False)

    assert response.status_code == 202
    assert job["kind"] == "course"
    assert job["status"] == "succeeded"
    assert job["progress"] == {
        "total": 3,
        "pending": 0,
        "running": 0,
        "succeeded": 3,
        "failed": 0,
        "cancelled": 0,
        "finished": 3,
        "percent": 100.0,
    }
    assert [(item["subject_name"], item["topic_name"]) for item in job["items"]] == [
        ("Mechanics", "Newton's laws"),
        ("Mechanics", "Kinematics"),
        ("Waves", "Sound"),
    ]
    assert [item["data"] for item in job["items"]] == [None, None, None]


async def test_course_results_carry_topics(client: httpx.AsyncClient) -> None:
    job_id = (await client.post(COURSES_PATH, json=COURSE_BODY)).json()["job"]["id"]

    job = await finished_job(client, job_id)

    titles = [item["data"]["microtopics"][0]["title"] for item in job["items"]]
    assert titles == ["Inertia", "Velocity", "Pitch"]


async def test_same_key_and_body_return_job(client: httpx.AsyncClient) -> None:
    headers = {"Idempotency-Key": "course-2026-spring"}
    first = await client.post(COURSES_PATH, json=COURSE_BODY, headers=headers)

    second = await client.post(COURSES_PATH, json=COURSE_BODY, headers=headers)

    assert first.status_code == 202
    assert second.status_code == 200
    assert second.json()["job"]["id"] == first.json()["job"]["id"]
    assert second.json()["job"]["idempotency_key"] == "course-2026-spring"
    assert second.headers["location"] == first.headers["location"]


async def test_same_key_other_body_conflicts(client: httpx.AsyncClient) -> None:
    headers = {"Idempotency-Key": "algebra-once"}
    first = await client.post(JOBS_PATH, json=CLIENT_BODY, headers=headers)
    other = {**CLIENT_BODY, "topic_name": "Geometry"}

    response = await client.post(JOBS_PATH, json=other, headers=headers)

    assert response.status_code == 409
    error = response.json()["error"]
    assert error["code"] == "idempotency_key_conflict"
    assert error["job_id"] == first.json()["job"]["id"]
    assert "algebra-once" in error["message"]


async def test_key_of_job_conflicts_for_course(client: httpx.AsyncClient) -> None:
    headers = {"Idempotency-Key": "shared-key"}
    await client.post(JOBS_PATH, json=CLIENT_BODY, headers=headers)

    response = await client.post(COURSES_PATH, json=COURSE_BODY, headers=headers)

    assert response.status_code == 409
    assert response.json()["error"]["code"] == "idempotency_key_conflict"


async def test_body_with_defaults_matches_key(client: httpx.AsyncClient) -> None:
    headers = {"Idempotency-Key": "defaults"}
    first = await client.post(JOBS_PATH, json=CLIENT_BODY, headers=headers)
    explicit = {**CLIENT_BODY, "language": "en", "depth": "lite"}

    second = await client.post(JOBS_PATH, json=explicit, headers=headers)

    assert second.status_code == 200
    assert second.json()["job"]["id"] == first.json()["job"]["id"]


async def test_bidi_isolate_in_course_is_422(
    client: httpx.AsyncClient, database_path: Path
) -> None:
    body = {"course": "c", "subjects": [{"name": "s", "topics": ["Sound\u2067"]}]}

    response = await client.post(COURSES_PATH, json=body)

    assert response.status_code == 422
    fields = response.json()["error"]["fields"]
    assert [entry["field"] for entry in fields] == ["subjects.0.topics.0.name"]
    assert "U+2067" in fields[0]["message"]
    assert count_rows(database_path, "jobs") == 0


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        pytest.param(JOBS_PATH, {"course_id": "c", "subject_name": "s"}, "topic_name", id="job"),
        pytest.param(
            COURSES_PATH,
            {"course": "c", "subjects": [{"name": "s", "topics": [{"name": ""}]}]},
            "subjects.0.topics.0.name",
            id="course-topic",
        ),
        pytest.param(COURSES_PATH, {"course": "c", "subjects": []}, "subjects", id="no-subjects"),
        pytest.param(
            COURSES_PATH,
            {"course": "c", "subjects": [{"name": "s", "topics": ["a", "A"]}]},
            "subjects.0.topics",
            id="repeated-topic",
        ),
    ],
)
async def test_invalid_body_is_422(
    client: httpx.AsyncClient, database_path: Path, path: str, body: dict[str, Any], field: str
) -> None:
    response = await client.post(path, json=body)

    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "invalid_request"
    assert field in [entry["field"] for entry in error["fields"]]
    assert count_rows(database_path, "jobs") == 0


@pytest.mark.parametrize("key", ["k" * 201, "two words", "tab\tkey", "clé"])
async def test_invalid_idempotency_key_is_422(client: httpx.AsyncClient, key: str) -> None:
    headers = {b"Idempotency-Key": key.encode("utf-8")}

    response = await client.post(JOBS_PATH, json=CLIENT_BODY, headers=headers)

    assert response.status_code == 422
    fields = response.json()["error"]["fields"]
    assert [entry["field"] for entry in fields] == ["header.Idempotency-Key"]
    assert fields[0]["message"] == (
        "must be 1 to 200 characters, each an ASCII letter, digit or punctuation mark, "
        "so no spaces, control characters or non-ASCII characters"
    )


async def test_longest_idempotency_key_is_accepted(client: httpx.AsyncClient) -> None:
    headers = {"Idempotency-Key": "!~" * 100}

    response = await client.post(JOBS_PATH, json=CLIENT_BODY, headers=headers)

    assert response.status_code == 202


async def test_job_body_must_be_json(client: httpx.AsyncClient) -> None:
    response = await client.post(
        JOBS_PATH,
        content=b"course_id=x",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )

    assert response.status_code == 415


@pytest.mark.parametrize("method", ["GET", "DELETE"])
async def test_unknown_job_is_404(client: httpx.AsyncClient, method: str) -> None:
    response = await client.request(method, f"{JOBS_PATH}/{'0' * 32}")

    assert response.status_code == 404
    error = response.json()["error"]
    assert error["code"] == "not_found"
    assert "0" * 32 in error["message"]


async def test_cancel_of_finished_job_keeps_status(client: httpx.AsyncClient) -> None:
    job_id = (await client.post(JOBS_PATH, json=CLIENT_BODY)).json()["job"]["id"]
    await finished_job(client, job_id)

    response = await client.delete(f"{JOBS_PATH}/{job_id}")

    assert response.status_code == 200
    job = response.json()["job"]
    assert job["status"] == "succeeded"
    assert job["cancelled_at"] is None


class TestCancel:
    @pytest.fixture
    def simulator_latency_s(self) -> float:
        return 1.0

    async def test_delete_cancels_running_job(self, client: httpx.AsyncClient) -> None:
        job_id = (await client.post(COURSES_PATH, json=COURSE_BODY)).json()["job"]["id"]
        await asyncio.sleep(0.3)

        response = await client.delete(f"{JOBS_PATH}/{job_id}")

        assert response.status_code == 200
        job = response.json()["job"]
        assert job["status"] == "cancelled"
        assert job["cancelled_at"] is not None
        assert job["progress"]["cancelled"] == 3
        assert {item["status"] for item in job["items"]} == {"cancelled"}
        await asyncio.sleep(1.5)
        later = await finished_job(client, job_id)
        assert later["progress"]["succeeded"] == 0
        assert later["status"] == "cancelled"
