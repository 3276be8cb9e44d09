"""Routes of background jobs: submit a generation or a course, follow it, cancel it.

A submission is stored before the response is sent, and gets 202 and the job. A
submission with an `Idempotency-Key` that an earlier job already used, and the
same body, gets 200 and that job; with another body, 409.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Header, Query, Response

from microtopic.api.body import require_json_body
from microtopic.api.job_schemas import JobOut, JobResponse
from microtopic.api.routes import PREFIX, RuntimeDep
from microtopic.domain import GenerationRequest
from microtopic.jobs.course import CourseSpec
from microtopic.storage import Submission

JOBS_PATH = f"{PREFIX}/jobs"

IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=200,
        pattern=r"^[\x21-\x7e]+$",
        description="Makes a re-submission of the same body return the first job.",
    ),
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
