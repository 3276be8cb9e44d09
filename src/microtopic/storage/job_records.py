"""Plain records of jobs and their items, as the job store reads and writes them.

A job's status is not stored: `StoredJob.status` computes it from the counts of its
items, so it cannot disagree with them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from microtopic.domain import GeneratedTopic, GenerationRequest


class JobKind(StrEnum):
    """The kind of submission: one generation request, or a course of many topics."""

    GENERATION = "generation"
    COURSE = "course"


class ItemStatus(StrEnum):
    """The stage of a job item.

    `pending` until an attempt claims it, then `running` until that attempt ends it as
    `succeeded` or `failed`. Cancelling the job makes a pending or running item
    `cancelled`. An attempt that stops early, at shutdown, puts the item back to
    `pending`.
    """

    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_finished(self) -> bool:
        """Whether the item has reached a status it never leaves."""
        return self in (ItemStatus.SUCCEEDED, ItemStatus.FAILED, ItemStatus.CANCELLED)


class JobStatus(StrEnum):
    """The stage of a job, computed from its items.

    A job is `queued` while no item has started, and `running` while some item is
    pending or running after that (an item put back for a later attempt has
    started). Once every item has finished, it is `succeeded` when every
    item succeeded, `failed` when none did, and `partially_failed` when some did.
    It is `cancelled` when it was cancelled before every item finished.
    """

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    PARTIALLY_FAILED = "partially_failed"
    CANCELLED = "cancelled"


@dataclass(frozen=True)
class ItemLease:
    """The claim of one attempt at an item: the pair that fences the attempt's writes.

    Each claim increments the item's attempt number, so once another attempt has
    claimed the item, every write conditioned on this pair matches no row.
    """

    item_id: str
    attempt: int


@dataclass(frozen=True)
class PendingItem:
    """An item waiting for a claim, and the number of claims it has had so far.

    `not_before` is when it may be claimed again, after an attempt that failed for a
    passing cause; None when it may be claimed at once.
    """

    item_id: str
    attempts: int
    not_before: datetime | None = None


@dataclass(frozen=True)
class ClaimedItem:
    """An item that this process has just claimed, with what the attempt needs to run it.

    `request_id` is the new generation request id of this attempt.
    """

    item_id: str
    job_id: str
    position: int
    attempt: int
    request_id: str
    request: GenerationRequest
    lease_expires_at: datetime

    @property
    def lease(self) -> ItemLease:
        """The token that fences this attempt's writes."""
        return ItemLease(self.item_id, self.attempt)


@dataclass(frozen=True)
class NewJob:
    """A job to insert: its kind, the generation request of each item, and the body's hash.

    `body_hash` identifies the submitted body, so that a re-submission under the same
    `idempotency_key` is distinguished from a different job.
    """

    kind: JobKind
    requests: list[GenerationRequest]
    body_hash: str
    idempotency_key: str | None = None


@dataclass(frozen=True)
class JobProgress:
    """How many items of a job are in each status."""

    pending: int = 0
    running: int = 0
    succeeded: int = 0
    failed: int = 0
    cancelled: int = 0

    @property
    def total(self) -> int:
        return self.pending + self.running + self.finished

    @property
    def finished(self) -> int:
        """Items that reached a final status: succeeded, failed or cancelled."""
        return self.succeeded + self.failed + self.cancelled


@dataclass(frozen=True)
class StoredItem:
    """A job item as stored, with its topic when it succeeded and topics were requested.

    `attempts` is how many times the item was claimed. `request_id` is the
    generation request of the latest attempt, None before the first claim. A
    pending item whose last attempt failed for a passing cause keeps that error,
    and `not_before` is when it is tried again.
    """

    id: str
    position: int
    request: GenerationRequest
    status: ItemStatus
    attempts: int
    request_id: str | None
    error_code: str | None
    error_message: str | None
    started_at: datetime | None
    finished_at: datetime | None
    not_before: datetime | None = None
    topic: GeneratedTopic | None = None


@dataclass(frozen=True)
class StoredJob:
    """A job as stored, with its items in submission order.

    `finished_at` is when the last item finished, and None while any is unfinished.
    """

    id: str
    kind: JobKind
    idempotency_key: str | None
    created_at: datetime
    cancelled_at: datetime | None
    finished_at: datetime | None
    progress: JobProgress
    items: list[StoredItem]

    @property
    def status(self) -> JobStatus:
        """The job's stage, from its items' statuses (see `JobStatus`)."""
        progress = self.progress
        if progress.pending or progress.running:
            started = any(item.attempts for item in self.items)
            if progress.running or progress.finished or started:
                return JobStatus.RUNNING
            return JobStatus.QUEUED
        if progress.cancelled:
            return JobStatus.CANCELLED
        if not progress.failed:
            return JobStatus.SUCCEEDED
        if not progress.succeeded:
            return JobStatus.FAILED
        return JobStatus.PARTIALLY_FAILED

    @property
    def pending_items(self) -> list[PendingItem]:
        """The items still waiting for a claim."""
        return [
            PendingItem(item.id, item.attempts)
            for item in self.items
            if item.status is ItemStatus.PENDING
        ]


@dataclass(frozen=True)
class Submission:
    """The outcome of submitting a job: the job, and whether this submission created it."""

    job: StoredJob
    created: bool
