"""The job service: submits, reads and cancels jobs, and hands new items to whatever runs them.

The database is the record of every job. Handing the items to a runner (waking the
in-process runner, or queueing arq jobs) only prompts it to start early. An item
that never got its prompt is still found and run, by the in-process runner's
polling or by the arq workers' sweep.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Protocol

from microtopic.domain import GenerationRequest
from microtopic.jobs.course import CourseSpec
from microtopic.storage import (
    JobKind,
    JobStore,
    NewJob,
    PendingItem,
    StoredJob,
    Submission,
)

logger = logging.getLogger(__name__)


class ItemDispatcher(Protocol):
    """Whatever runs job items: the in-process runner, or the arq queue."""

    async def dispatch(self, items: Sequence[PendingItem]) -> None:
        """Prompt the runner to start the items; they are in the database already."""

    async def cancel(self, job_id: str) -> None:
        """Stop the running items of a job that the database marks cancelled."""


def body_hash(kind: JobKind, body: dict[str, Any]) -> str:
    """Return the SHA-256 of a submission, in a form that ignores key order and spacing."""
    document = json.dumps({"kind": kind.value, "body": body}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(document.encode("utf-8")).hexdigest()


class JobService:
    """Submits jobs to the store, then to the dispatcher, and reads and cancels them.

    Without a dispatcher, submitted items wait in the database for any process
    that runs jobs on the same database.
    """

    def __init__(self, store: JobStore, dispatcher: ItemDispatcher | None) -> None:
        self._store = store
        self._dispatcher = dispatcher

    async def submit_generation(
        self, request: GenerationRequest, *, idempotency_key: str | None = None
    ) -> Submission:
        """Submit one generation request as a job of one item."""
        body = request.model_dump(mode="json")
        return await self._submit(JobKind.GENERATION, body, [request], idempotency_key)

    async def submit_course(
        self, course: CourseSpec, *, idempotency_key: str | None = None
    ) -> Submission:
        """Submit a course as a job with one item per topic."""
        body = course.model_dump(mode="json")
        return await self._submit(JobKind.COURSE, body, course.requests(), idempotency_key)

    async def get(self, job_id: str, *, with_topics: bool = False) -> StoredJob:
        """Return the job; with `with_topics`, each succeeded item carries its topic."""
        return await self._store.get_job(job_id, with_topics=with_topics)

    async def cancel(self, job_id: str) -> StoredJob:
        """Cancel the job's pending and running items and return the job."""
        job = await self._store.cancel_job(job_id, cancelled_at=datetime.now(UTC))
        logger.info("job %s: cancelled (%s)", job_id, job.status)
        if self._dispatcher is not None:
            await self._dispatcher.cancel(job_id)
        return job

    async def _submit(
        self,
        kind: JobKind,
        body: dict[str, Any],
        requests: list[GenerationRequest],
        idempotency_key: str | None,
    ) -> Submission:
        new_job = NewJob(
            kind=kind,
            requests=requests,
            body_hash=body_hash(kind, body),
            idempotency_key=idempotency_key,
        )
        submission = await self._store.create_job(new_job, created_at=datetime.now(UTC))
        job = submission.job
        if submission.created:
            logger.info("job %s: submitted with %d items", job.id, len(job.items))
        else:
            logger.info("job %s: submitted again with its idempotency key", job.id)

        # A re-submission dispatches again too, in case the first one stopped before it
        # did; the runners skip items that are already claimed or finished.
        pending = job.pending_items
        if self._dispatcher is not None and pending:
            await self._dispatcher.dispatch(pending)
        return submission
