"""Job clients of `microtopic batch` and `microtopic jobs`: this machine, or a running service.

`LocalJobs` starts a runtime on the configured database (and, with `run_jobs`, an
in-process runner); `RemoteJobs` calls the job routes of the service at `--server`.
Both return the API's `JobOut`, so that the commands print either the same way.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Protocol
from urllib.parse import quote

import httpx
from pydantic import ValidationError

from microtopic.api.job_schemas import JobOut, JobResponse
from microtopic.cli.remote import describe_server, response_error
from microtopic.config import Settings
from microtopic.errors import ServiceResponseError, ServiceUnreachableError
from microtopic.jobs.course import CourseSpec
from microtopic.runtime import Runtime
from microtopic.storage import Database, JobStore
from microtopic.storage.jobs import job_not_found

JOBS_PATH = "/api/v1/microtopic-content/jobs"
COURSES_PATH = "/api/v1/microtopic-content/courses"


def course_idempotency_key(course: CourseSpec) -> str:
    """Return the default idempotency key of a course: the SHA-256 of its content.

    Submitting the same course again therefore returns its first job, which resumes
    where it stopped, instead of generating every topic again.
    """
    document = json.dumps(course.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return "course-sha256-" + hashlib.sha256(document.encode("utf-8")).hexdigest()


class JobClient(Protocol):
    """Submits courses and reads jobs."""

    async def submit_course(
        self, course: CourseSpec, idempotency_key: str | None
    ) -> tuple[JobOut, bool]:
        """Submit the course; return its job and whether this submission created it."""

    async def get(self, job_id: str, *, results: bool = False) -> JobOut:
        """Return the job; with `results`, each succeeded item carries its topic."""


class LocalJobs:
    """Jobs in the configured database, submitted and read through a runtime of this process."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    async def submit_course(
        self, course: CourseSpec, idempotency_key: str | None
    ) -> tuple[JobOut, bool]:
        submission = await self.runtime.jobs.submit_course(course, idempotency_key=idempotency_key)
        return JobOut.from_job(submission.job), submission.created

    async def get(self, job_id: str, *, results: bool = False) -> JobOut:
        return JobOut.from_job(await self.runtime.jobs.get(job_id, with_topics=results))


class RemoteJobs:
    """Jobs of the service at `server`, through its job routes."""

    def __init__(self, server: str, http: httpx.AsyncClient) -> None:
        self._base_url = server.rstrip("/")
        self._display_url = describe_server(self._base_url)
        self._http = http

    async def submit_course(
        self, course: CourseSpec, idempotency_key: str | None
    ) -> tuple[JobOut, bool]:
        headers = {} if idempotency_key is None else {"Idempotency-Key": idempotency_key}
        response = await self._send(
            "POST", COURSES_PATH, json=course.model_dump(mode="json"), headers=headers
        )
        return self._job_of(response), response.status_code == 202

    async def get(self, job_id: str, *, results: bool = False) -> JobOut:
        params = {"results": "true" if results else "false"}
        response = await self._send("GET", job_path(job_id), params=params)
        return self._job_of(response)

    def _job_of(self, response: httpx.Response) -> JobOut:
        try:
            return JobResponse.model_validate_json(response.content).job
        except ValidationError:
            raise ServiceResponseError(
                f"The server at {self._display_url} returned something other than a Microtopic "
                "job. Check that --server points at a Microtopic service.",
                url=describe_server(str(response.url)),
                status_code=response.status_code,
            ) from None

    async def _send(self, method: str, path: str, **options: Any) -> httpx.Response:
        url = self._base_url + path
        try:
            response = await self._http.request(method, url, **options)
        except httpx.HTTPError as exc:
            raise ServiceUnreachableError(
                f"No Microtopic service responds at {self._display_url} ({type(exc).__name__}). "
                "Start one with `microtopic serve`, or pass --server with the URL of a "
                "running one.",
                url=describe_server(url),
            ) from None
        if response.is_success:
            return response
        raise response_error(response, self._base_url, url)


def job_path(job_id: str) -> str:
    """Return the route path of a job, with its id percent-encoded.

    Raises `NotFoundError` for an id with a slash, or `.` or `..`, because no encoding
    carries it to the job route. The service decodes `%2F` before it routes a request,
    and httpx removes `.` and `..` segments. No job has such an id, because job ids are
    32 hex digits.
    """
    if "/" in job_id or job_id in (".", ".."):
        raise job_not_found(job_id)
    return f"{JOBS_PATH}/{quote(job_id, safe='')}"


async def read_local_job(settings: Settings, job_id: str, *, results: bool) -> JobOut:
    """Return a job from the configured database, without starting the gateway."""
    database = Database(settings.database_url, setting=settings.database_url_setting)
    try:
        await database.upgrade()
        job = await JobStore(database).get_job(job_id, with_topics=results)
    finally:
        await database.dispose()
    return JobOut.from_job(job)
