"""Response bodies of the job routes, which the CLI also reads and prints."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel

from microtopic.domain import GeneratedTopic
from microtopic.storage import JobProgress, StoredItem, StoredJob


class ItemErrorOut(BaseModel):
    """Why an item failed: the stable code of the error and its message."""

    code: str
    message: str


class JobItemOut(BaseModel):
    """One item of a job. `data` is its topic once it succeeded, when results are requested.

    A pending item whose last attempt failed for a passing cause shows that `error`,
    and `next_attempt_at` is when it is tried again.
    """

    id: str
    position: int
    subject_name: str
    topic_name: str
    status: str
    attempts: int
    request_id: str | None
    error: ItemErrorOut | None
    started_at: datetime | None
    finished_at: datetime | None
    next_attempt_at: datetime | None = None
    data: GeneratedTopic | None

    @classmethod
    def from_item(cls, item: StoredItem) -> JobItemOut:
        error = None
        if item.error_code is not None:
            error = ItemErrorOut(code=item.error_code, message=item.error_message or "")
        return cls(
            id=item.id,
            position=item.position,
            subject_name=item.request.subject_name,
            topic_name=item.request.topic_name,
            status=item.status.value,
            attempts=item.attempts,
            request_id=item.request_id,
            error=error,
            started_at=item.started_at,
            finished_at=item.finished_at,
            next_attempt_at=item.not_before,
            data=item.topic,
        )

    @property
    def label(self) -> str:
        return f"{self.subject_name} / {self.topic_name}"


class JobProgressOut(BaseModel):
    """How many items are in each status; `percent` is the share that has finished."""

    total: int
    pending: int
    running: int
    succeeded: int
    failed: int
    cancelled: int
    finished: int
    percent: float

    @classmethod
    def from_progress(cls, progress: JobProgress) -> JobProgressOut:
        percent = 100.0 * progress.finished / progress.total if progress.total else 100.0
        return cls(
            total=progress.total,
            pending=progress.pending,
            running=progress.running,
            succeeded=progress.succeeded,
            failed=progress.failed,
            cancelled=progress.cancelled,
            finished=progress.finished,
            percent=round(percent, 1),
        )


# Job statuses that never change again.
FINAL_JOB_STATUSES = frozenset({"succeeded", "failed", "partially_failed", "cancelled"})


class JobOut(BaseModel):
    """A job, its status, its progress and its items in submission order."""

    id: str
    kind: str
    status: str
    idempotency_key: str | None
    created_at: datetime
    cancelled_at: datetime | None
    finished_at: datetime | None
    progress: JobProgressOut
    items: list[JobItemOut]

    @classmethod
    def from_job(cls, job: StoredJob) -> JobOut:
        return cls(
            id=job.id,
            kind=job.kind.value,
            status=job.status.value,
            idempotency_key=job.idempotency_key,
            created_at=job.created_at,
            cancelled_at=job.cancelled_at,
            finished_at=job.finished_at,
            progress=JobProgressOut.from_progress(job.progress),
            items=[JobItemOut.from_item(item) for item in job.items],
        )

    @property
    def is_finished(self) -> bool:
        """Whether the job's status is final."""
        return self.status in FINAL_JOB_STATUSES


class JobResponse(BaseModel):
    success: bool = True
    job: JobOut
