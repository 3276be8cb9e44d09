"""The job store: jobs, their items, and the claims and leases that run each item once.

Every change of an item's status is one conditional UPDATE, so that concurrent
processes agree without locks held across calls:

- A claim moves an item from `pending`, or from `running` with an expired lease, to
  `running` with a new lease, and increments its attempt number.
- Every later write of that attempt (renewing the lease, giving the item back,
  recording its outcome) requires the row to be `running` with the same attempt
  number. Once another attempt has claimed the item, or the job was cancelled, those
  writes match no row and the stale attempt cannot change anything.

Times come from the caller's clock, so the hosts that share a database need clocks
that agree to well within a lease.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

from pydantic import ValidationError
from sqlalchemy import ColumnElement, and_, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from microtopic.domain import GeneratedTopic, GenerationRequest
from microtopic.errors import (
    IdempotencyKeyConflictError,
    ItemCancelledError,
    LeaseLostError,
    NotFoundError,
    StorageError,
    quoted_id,
)
from microtopic.storage.database import Database, uninterruptible
from microtopic.storage.errors import storage_errors
from microtopic.storage.job_records import (
    ClaimedItem,
    ItemLease,
    ItemStatus,
    JobKind,
    JobProgress,
    NewJob,
    PendingItem,
    StoredItem,
    StoredJob,
    Submission,
)
from microtopic.storage.models import (
    ERROR_MESSAGE_LENGTH,
    GeneratedTopicRow,
    GenerationRequestRow,
    JobItemRow,
    JobRow,
)
from microtopic.storage.records import RequestStatus, require_aware, truncate

ATTEMPTS_EXHAUSTED = "attempts_exhausted"
"""The error code of an item that no attempt finished within the allowed attempts."""

ABANDONED_REQUEST_MESSAGE = (
    "The process that ran this attempt stopped answering, so its lease expired and "
    "another attempt took the job item over."
)


class JobStore:
    """Reads and writes jobs and their items; raises `StorageError` for any database error.

    Each method runs to its end even when its caller is cancelled (see `uninterruptible`).
    """

    def __init__(self, database: Database) -> None:
        self._database = database

    @uninterruptible
    async def create_job(self, job: NewJob, *, created_at: datetime) -> Submission:
        """Insert the job with a pending item per request, or return the job of its key.

        A job with the same idempotency key and body hash is returned as it is now,
        with `created=False`. Raises `IdempotencyKeyConflictError` when the key
        belongs to a job with another body.
        """
        require_aware(created_at, "created_at")
        if job.idempotency_key is not None:
            existing = await self._job_of_key(job.idempotency_key, job.body_hash)
            if existing is not None:
                return Submission(existing, created=False)

        job_id = uuid.uuid4().hex
        if await self._insert(job_id, job, created_at):
            return Submission(await self.get_job(job_id), created=True)

        # Another submission with the same key committed between the lookup and the insert.
        assert job.idempotency_key is not None
        existing = await self._job_of_key(job.idempotency_key, job.body_hash)
        if existing is None:
            raise _duplicate_error(job_id)
        return Submission(existing, created=False)

    @uninterruptible
    async def get_job(self, job_id: str, *, with_topics: bool = False) -> StoredJob:
        """Return the job with its items; raise `NotFoundError` for an unknown id.

        With `with_topics`, each succeeded item carries the topic it generated.
        """
        with storage_errors(self._database.url, f"read job {job_id}"):
            async with self._database.session() as session, session.begin():
                job_row = await session.get(JobRow, job_id)
                if job_row is None:
                    raise job_not_found(job_id)
                item_rows = list(
                    await session.scalars(
                        select(JobItemRow)
                        .where(JobItemRow.job_id == job_id)
                        .order_by(JobItemRow.position)
                    )
                )
                topics = await _topics_of(session, job_id) if with_topics else {}

        items = [_stored_item(row, topics.get(row.id)) for row in item_rows]
        return _stored_job(job_row, items)

    @uninterruptible
    async def unfinished_jobs(self, *, limit: int = 20) -> list[StoredJob]:
        """Return the most recent jobs that still have a pending or running item."""
        unfinished = (ItemStatus.PENDING, ItemStatus.RUNNING)
        with storage_errors(self._database.url, "list the unfinished jobs"):
            async with self._database.session() as session, session.begin():
                job_ids = list(
                    await session.scalars(
                        select(JobRow.id)
                        .where(
                            JobRow.id.in_(
                                select(JobItemRow.job_id).where(JobItemRow.status.in_(unfinished))
                            )
                        )
                        .order_by(JobRow.created_at.desc())
                        .limit(limit)
                    )
                )
        return [await self.get_job(job_id) for job_id in job_ids]

    @uninterruptible
    async def cancel_job(self, job_id: str, *, cancelled_at: datetime) -> StoredJob:
        """Cancel every pending and running item of the job, and return the job.

        An attempt that is running a cancelled item loses its lease: it can no longer
        store an outcome, and it stops when it next renews the lease. Cancelling a job
        whose items have all finished changes nothing.
        """
        require_aware(cancelled_at, "cancelled_at")
        unfinished = (ItemStatus.PENDING, ItemStatus.RUNNING)
        cancel_items = (
            update(JobItemRow)
            .where(JobItemRow.job_id == job_id, JobItemRow.status.in_(unfinished))
            .values(status=ItemStatus.CANCELLED, finished_at=cancelled_at, lease_expires_at=None)
            .returning(JobItemRow.id)
        )
        mark_job = (
            update(JobRow)
            .where(JobRow.id == job_id, JobRow.cancelled_at.is_(None))
            .values(cancelled_at=cancelled_at)
        )

        with storage_errors(self._database.url, f"cancel job {job_id}"):
            async with self._database.session() as session, session.begin():
                cancelled = list(await session.scalars(cancel_items))
                if cancelled:
                    await session.execute(mark_job)
        return await self.get_job(job_id)

    @uninterruptible
    async def claim(
        self, item_id: str, *, now: datetime, lease_s: float, max_attempts: int
    ) -> ClaimedItem | None:
        """Claim the item for a new attempt, or return None when it cannot be claimed.

        An item can be claimed when it is pending (and its `not_before`, if set, has
        passed), or running under an expired lease, and has had fewer than
        `max_attempts` claims. Of two processes that claim it at once, exactly one
        gets it. Taking over an item from an attempt whose lease expired marks that
        attempt's generation request failed with `lease_lost`, since its process
        will never finish it.
        """
        require_aware(now, "now")
        request_id = uuid.uuid4().hex
        lease_expires_at = now + timedelta(seconds=lease_s)
        # The claim leaves request_id as it was, so that it returns the previous
        # attempt's; the second statement then sets the new one. The claim is the
        # first statement, which on SQLite takes the write lock at once, and on
        # PostgreSQL locks the row until the transaction ends.
        claim = (
            update(JobItemRow)
            .where(JobItemRow.id == item_id, _claimable(now, max_attempts))
            .values(
                status=ItemStatus.RUNNING,
                attempt=JobItemRow.attempt + 1,
                lease_expires_at=lease_expires_at,
                not_before=None,
                started_at=now,
            )
            .returning(
                JobItemRow.job_id,
                JobItemRow.position,
                JobItemRow.attempt,
                JobItemRow.request,
                JobItemRow.request_id,
            )
        )
        with storage_errors(self._database.url, f"claim job item {item_id}"):
            async with self._database.session() as session, session.begin():
                row = (await session.execute(claim)).one_or_none()
                if row is None:
                    return None
                job_id, position, attempt, request, previous_request_id = row
                await session.execute(
                    update(JobItemRow).where(JobItemRow.id == item_id).values(request_id=request_id)
                )
                if previous_request_id is not None:
                    await _fail_abandoned_request(session, previous_request_id, now)
        return ClaimedItem(
            item_id=item_id,
            job_id=job_id,
            position=position,
            attempt=attempt,
            request_id=request_id,
            request=_request_from_json(item_id, request),
            lease_expires_at=lease_expires_at,
        )

    @uninterruptible
    async def claim_next(
        self, *, limit: int, now: datetime, lease_s: float, max_attempts: int
    ) -> list[ClaimedItem]:
        """Claim up to `limit` claimable items, oldest job first, as `claim` does.

        Items that another process claims in the meantime are skipped, so fewer than
        `limit` items may come back even when more were claimable.
        """
        require_aware(now, "now")
        candidates = (
            select(JobItemRow.id)
            .where(_claimable(now, max_attempts))
            .order_by(JobItemRow.created_at, JobItemRow.job_id, JobItemRow.position)
            .limit(limit)
        )
        # The candidates are read in a transaction of their own. On SQLite, a
        # transaction that reads first and writes later fails when another writer
        # commits in between, so each claim is a transaction that writes first.
        with storage_errors(self._database.url, "find claimable job items"):
            async with self._database.session() as session, session.begin():
                item_ids = list(await session.scalars(candidates))

        claimed = []
        for item_id in item_ids:
            item = await self.claim(item_id, now=now, lease_s=lease_s, max_attempts=max_attempts)
            if item is not None:
                claimed.append(item)
        return claimed

    @uninterruptible
    async def renew_lease(self, lease: ItemLease, *, now: datetime, lease_s: float) -> bool:
        """Extend the attempt's lease to `lease_s` from `now`; return whether it still holds it."""
        require_aware(now, "now")
        values = {"lease_expires_at": now + timedelta(seconds=lease_s)}
        return await self._update_held(lease, values, "renew the lease of")

    @uninterruptible
    async def release(self, lease: ItemLease) -> bool:
        """Put the item back to pending, for another attempt to claim at once.

        Returns whether the attempt still held the item.
        """
        values = {"status": ItemStatus.PENDING, "lease_expires_at": None}
        return await self._update_held(lease, values, "release")

    @uninterruptible
    async def retry_later(
        self,
        lease: ItemLease,
        *,
        not_before: datetime,
        error_code: str,
        error_message: str,
    ) -> bool:
        """Put the item back to pending, to be claimed again at `not_before` or later.

        The attempt's error stays on the item until a later attempt ends it, so that
        a reader sees why the item waits. Returns whether the attempt still held it.
        """
        require_aware(not_before, "not_before")
        values = {
            "status": ItemStatus.PENDING,
            "lease_expires_at": None,
            "not_before": not_before,
            "error_code": error_code,
            "error_message": truncate(error_message, ERROR_MESSAGE_LENGTH),
        }
        return await self._update_held(lease, values, "put back for a later attempt")

    @uninterruptible
    async def finish_failure(
        self, lease: ItemLease, *, error_code: str, error_message: str, finished_at: datetime
    ) -> bool:
        """Record the attempt's failure; return whether it still held the item.

        `error_message` is cut to its first 2000 characters.
        """
        require_aware(finished_at, "finished_at")
        values = {
            "status": ItemStatus.FAILED,
            "error_code": error_code,
            "error_message": truncate(error_message, ERROR_MESSAGE_LENGTH),
            "finished_at": finished_at,
            "lease_expires_at": None,
        }
        return await self._update_held(lease, values, "store the failure of")

    @uninterruptible
    async def fail_exhausted(self, *, now: datetime, max_attempts: int) -> int:
        """Fail the items that had `max_attempts` claims and are not held by a live attempt.

        Returns how many items failed, each with the code `attempts_exhausted`.
        """
        require_aware(now, "now")
        message = (
            f"No attempt finished this item within {max_attempts} attempts: each process "
            "that claimed it stopped or lost its lease first. Check the logs of the "
            "workers, then submit the item again."
        )
        statement = (
            update(JobItemRow)
            .where(JobItemRow.attempt >= max_attempts, _free(now))
            .values(
                status=ItemStatus.FAILED,
                error_code=ATTEMPTS_EXHAUSTED,
                error_message=message,
                finished_at=now,
                lease_expires_at=None,
            )
            .returning(JobItemRow.id)
        )

        with storage_errors(self._database.url, "fail the job items out of attempts"):
            async with self._database.session() as session, session.begin():
                failed = list(await session.scalars(statement))
        return len(failed)

    @uninterruptible
    async def find_stranded(
        self, *, now: datetime, lease_s: float, max_attempts: int, limit: int
    ) -> list[PendingItem]:
        """Return up to `limit` claimable items that may have no queued job to run them.

        Those are the items running under an expired lease, whose process died, and
        the items still pending more than `lease_s` after they were created, or after
        the `not_before` they were put back with.
        """
        require_aware(now, "now")
        due_since = func.coalesce(JobItemRow.not_before, JobItemRow.created_at)
        waited_too_long = and_(
            JobItemRow.status == ItemStatus.PENDING,
            due_since < now - timedelta(seconds=lease_s),
        )
        expired = and_(JobItemRow.status == ItemStatus.RUNNING, JobItemRow.lease_expires_at < now)
        statement = (
            select(JobItemRow.id, JobItemRow.attempt)
            .where(JobItemRow.attempt < max_attempts, or_(waited_too_long, expired))
            .order_by(JobItemRow.created_at, JobItemRow.job_id, JobItemRow.position)
            .limit(limit)
        )

        with storage_errors(self._database.url, "find stranded job items"):
            async with self._database.session() as session, session.begin():
                rows = (await session.execute(statement)).all()
        return [PendingItem(item_id, attempts) for item_id, attempts in rows]

    async def _job_of_key(self, idempotency_key: str, body_hash: str) -> StoredJob | None:
        statement = select(JobRow.id, JobRow.body_hash).where(
            JobRow.idempotency_key == idempotency_key
        )
        with storage_errors(self._database.url, "look up a job by its idempotency key"):
            async with self._database.session() as session, session.begin():
                row = (await session.execute(statement)).one_or_none()
        if row is None:
            return None

        job_id, stored_hash = row
        if stored_hash != body_hash:
            raise IdempotencyKeyConflictError(
                f"The idempotency key {idempotency_key!r} was already used for job {job_id}, "
                "whose body differs from this one. Send a new key for a new job, or the "
                "same body to get that job back.",
                idempotency_key=idempotency_key,
                job_id=job_id,
            )
        return await self.get_job(job_id)

    async def _insert(self, job_id: str, job: NewJob, created_at: datetime) -> bool:
        """Insert the job and its items; return False when its idempotency key is taken."""
        job_row = JobRow(
            id=job_id,
            kind=job.kind,
            idempotency_key=job.idempotency_key,
            body_hash=job.body_hash,
            created_at=created_at,
        )
        item_rows = [
            JobItemRow(
                id=uuid.uuid4().hex,
                job_id=job_id,
                position=position,
                request=request.model_dump(mode="json"),
                status=ItemStatus.PENDING,
                attempt=0,
                created_at=created_at,
            )
            for position, request in enumerate(job.requests)
        ]

        with storage_errors(self._database.url, f"insert job {job_id}"):
            try:
                async with self._database.session() as session, session.begin():
                    session.add(job_row)
                    # The items refer to the job by a foreign key, and the models
                    # declare no relationship that would order the two inserts.
                    await session.flush()
                    session.add_all(item_rows)
            except IntegrityError:
                # The ids are new, so the conflict is the idempotency key, if there is one.
                if job.idempotency_key is None:
                    raise _duplicate_error(job_id) from None
                return False
        return True

    async def _update_held(self, lease: ItemLease, values: dict[str, Any], action: str) -> bool:
        statement = (
            update(JobItemRow).where(*_held_by(lease)).values(**values).returning(JobItemRow.id)
        )
        description = f"{action} job item {lease.item_id} (attempt {lease.attempt})"
        with storage_errors(self._database.url, description):
            async with self._database.session() as session, session.begin():
                updated = (await session.execute(statement)).scalar_one_or_none()
        return updated is not None


async def finish_item_success(
    session: AsyncSession, lease: ItemLease, *, finished_at: datetime
) -> None:
    """Mark the item succeeded in the caller's transaction, if the attempt still holds it.

    Raises `LeaseLostError` otherwise, so that the caller's transaction, which stores
    the attempt's topic, rolls back: an item's topic is stored by one attempt only.
    """
    statement = (
        update(JobItemRow)
        .where(*_held_by(lease))
        .values(
            status=ItemStatus.SUCCEEDED,
            finished_at=finished_at,
            lease_expires_at=None,
            error_code=None,
            error_message=None,
        )
        .returning(JobItemRow.id)
    )
    if (await session.execute(statement)).scalar_one_or_none() is not None:
        return
    status = await session.scalar(select(JobItemRow.status).where(JobItemRow.id == lease.item_id))
    if status == ItemStatus.CANCELLED:
        raise ItemCancelledError(
            f"The job was cancelled while attempt {lease.attempt} at job item "
            f"{lease.item_id} ran, so the topic of this attempt is discarded.",
            item_id=lease.item_id,
            attempt=lease.attempt,
        )
    raise LeaseLostError(
        f"Attempt {lease.attempt} at job item {lease.item_id} lost its claim before it "
        "stored its topic: the lease expired and another attempt took the item over. "
        "The topic of this attempt is discarded.",
        item_id=lease.item_id,
        attempt=lease.attempt,
    )


def _free(now: datetime) -> ColumnElement[bool]:
    # Pending and due, or running under a lease that has expired, so that no attempt holds it.
    due = or_(JobItemRow.not_before.is_(None), JobItemRow.not_before <= now)
    return or_(
        and_(JobItemRow.status == ItemStatus.PENDING, due),
        and_(JobItemRow.status == ItemStatus.RUNNING, JobItemRow.lease_expires_at < now),
    )


async def _fail_abandoned_request(session: AsyncSession, request_id: str, now: datetime) -> None:
    # A process that died left its attempt's request running. An attempt that was
    # stopped has already finished its own request, so the status guard skips it.
    table = GenerationRequestRow
    await session.execute(
        update(table)
        .where(table.id == request_id, table.status == RequestStatus.RUNNING)
        .values(
            status=RequestStatus.FAILED,
            error_code=LeaseLostError.code,
            error_message=ABANDONED_REQUEST_MESSAGE,
            finished_at=now,
        )
    )


def _claimable(now: datetime, max_attempts: int) -> ColumnElement[bool]:
    return and_(JobItemRow.attempt < max_attempts, _free(now))


def _held_by(lease: ItemLease) -> tuple[ColumnElement[bool], ...]:
    return (
        JobItemRow.id == lease.item_id,
        JobItemRow.attempt == lease.attempt,
        JobItemRow.status == ItemStatus.RUNNING,
    )


async def _topics_of(session: AsyncSession, job_id: str) -> dict[str, GeneratedTopic]:
    statement = (
        select(JobItemRow.id, GeneratedTopicRow.content)
        .join(GeneratedTopicRow, GeneratedTopicRow.request_id == JobItemRow.request_id)
        .where(JobItemRow.job_id == job_id, JobItemRow.status == ItemStatus.SUCCEEDED)
    )
    rows = (await session.execute(statement)).all()
    return {item_id: _topic_from_json(item_id, content) for item_id, content in rows}


def _stored_item(row: JobItemRow, topic: GeneratedTopic | None) -> StoredItem:
    return StoredItem(
        id=row.id,
        position=row.position,
        request=_request_from_json(row.id, row.request),
        status=ItemStatus(row.status),
        attempts=row.attempt,
        request_id=row.request_id,
        error_code=row.error_code,
        error_message=row.error_message,
        started_at=row.started_at,
        finished_at=row.finished_at,
        not_before=row.not_before if row.status == ItemStatus.PENDING else None,
        topic=topic,
    )


def _stored_job(row: JobRow, items: list[StoredItem]) -> StoredJob:
    counts = {status: 0 for status in ItemStatus}
    for item in items:
        counts[item.status] += 1
    progress = JobProgress(
        pending=counts[ItemStatus.PENDING],
        running=counts[ItemStatus.RUNNING],
        succeeded=counts[ItemStatus.SUCCEEDED],
        failed=counts[ItemStatus.FAILED],
        cancelled=counts[ItemStatus.CANCELLED],
    )
    finish_times = [item.finished_at for item in items if item.finished_at is not None]
    all_finished = bool(items) and len(finish_times) == len(items)
    return StoredJob(
        id=row.id,
        kind=JobKind(row.kind),
        idempotency_key=row.idempotency_key,
        created_at=row.created_at,
        cancelled_at=row.cancelled_at,
        finished_at=max(finish_times) if all_finished else None,
        progress=progress,
        items=items,
    )


def _request_from_json(item_id: str, data: dict[str, Any]) -> GenerationRequest:
    try:
        return GenerationRequest.model_validate(data)
    except ValidationError as exc:
        raise StorageError(
            f"The generation request stored for job item {item_id} no longer matches the "
            "current request schema. Submit the item again."
        ) from exc


def _topic_from_json(item_id: str, data: dict[str, Any]) -> GeneratedTopic:
    try:
        return GeneratedTopic.model_validate(data)
    except ValidationError as exc:
        raise StorageError(
            f"The topic stored for job item {item_id} no longer matches the current "
            "lesson schema. Submit the item again."
        ) from exc


def _duplicate_error(job_id: str) -> StorageError:
    return StorageError(
        f"Could not insert job {job_id}: the database rejected it as a duplicate. This is "
        "a bug in Microtopic. Report it with the server log."
    )


def job_not_found(job_id: str) -> NotFoundError:
    """Return the error for a job id that no job has."""
    return NotFoundError(
        f"No job has the id {quoted_id(job_id)}. Use the id returned when the job was submitted."
    )
