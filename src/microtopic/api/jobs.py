"""Routes of background jobs: submit a generation or a course, follow it, cancel it.

A submission is stored before the response is sent, and gets 202 and the job. A
submission with an `Idempotency-Key` that an earlier job already used, and the
same body, gets 200 and that job; with another body, 409.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Header, Query, Response
from pydantic import AfterValidator
from pydantic_core import PydanticCustomError

from microtopic.api.body import require_json_body
from microtopic.api.job_schemas import JobOut, JobResponse
from microtopic.api.routes import PREFIX, RuntimeDep
from microtopic.domain import GenerationRequest
from microtopic.jobs.course import CourseSpec
from microtopic.storage import Submission

JOBS_PATH = f"{PREFIX}/jobs"

MAX_IDEMPOTENCY_KEY_LENGTH = 200


def _check_idempotency_key(key: str | None) -> str | None:
    # Printable ASCII other than the space: 0x21 (`!`) to 0x7E (`~`).
    if key is None:
        return None
    if not 1 <= len(key) <= MAX_IDEMPOTENCY_KEY_LENGTH or not all(
        "!" <= char <= "~" for char in key
    ):
        raise PydanticCustomError(
            "invalid_idempotency_key",
            "must be 1 to {max_length} characters, each an ASCII letter, digit or "
            "punctuation mark, so no spaces, control characters or non-ASCII characters",
            {"max_length": MAX_IDEMPOTENCY_KEY_LENGTH},
        )
    return key


IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        description="Makes a re-submission of the same body return the first job: 1 to "
        f"{MAX_IDEMPOTENCY_KEY_LENGTH} printable ASCII characters, without spaces.",
    ),
    AfterValidator(_check_idempotency_key),
]

router = APIRouter(prefix=PREFIX)


@router.post(
    "/jobs",
    status_code=202,
    response_model=JobResponse,
    dependencies=[Depends(require_json_body)],
    responses={200: {"description": "The job submitted earlier with this idempotency key."}},
)
async def submit_job(
    body: GenerationRequest,
    response: Response,
    runtime: RuntimeDep,
    idempotency_key: IdempotencyKey = None,
) -> JobResponse:
    """Submit one generation to run in the background, as a job of one item."""
    submission = await runtime.jobs.submit_generation(body, idempotency_key=idempotency_key)
    return _accepted(submission, response)


@router.post(
    "/courses",
    status_code=202,
    response_model=JobResponse,
    dependencies=[Depends(require_json_body)],
    responses={200: {"description": "The job submitted earlier with this idempotency key."}},
)
async def submit_course(
    body: CourseSpec,
    response: Response,
    runtime: RuntimeDep,
    idempotency_key: IdempotencyKey = None,
) -> JobResponse:
    """Submit a course (a course file as JSON) as a job with one item per topic."""
    submission = await runtime.jobs.submit_course(body, idempotency_key=idempotency_key)
    return _accepted(submission, response)


@router.get("/jobs/{job_id}", response_model=JobResponse)
async def get_job(
    job_id: str,
    runtime: RuntimeDep,
    results: Annotated[
        bool, Query(description="Include each succeeded item's topic as `data`.")
    ] = True,
) -> JobResponse:
    """Return the job's status, progress and items, with their topics unless `results=false`."""
    job = await runtime.jobs.get(job_id, with_topics=results)
    return JobResponse(job=JobOut.from_job(job))


@router.delete("/jobs/{job_id}", response_model=JobResponse)
async def cancel_job(job_id: str, runtime: RuntimeDep) -> JobResponse:
    """Cancel the job's pending and running items, and return the job."""
    job = await runtime.jobs.cancel(job_id)
    return JobResponse(job=JobOut.from_job(job))


def _accepted(submission: Submission, response: Response) -> JobResponse:
    if not submission.created:
        response.status_code = 200
    response.headers["Location"] = f"{JOBS_PATH}/{submission.job.id}"
    return JobResponse(job=JobOut.from_job(submission.job))
