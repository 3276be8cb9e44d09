"""The job store on SQLite and PostgreSQL: submission, idempotency, claims, leases, fencing."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable
from datetime import timedelta

import pytest

from microtopic.errors import (
    IdempotencyKeyConflictError,
    ItemCancelledError,
    LeaseLostError,
    NotFoundError,
)
from microtopic.storage import (
    ClaimedItem,
    Database,
    GenerationStore,
    ItemStatus,
    JobKind,
    JobStatus,
    JobStore,
    NewJob,
    PendingItem,
    RequestStatus,
)
from microtopic.storage.jobs import ATTEMPTS_EXHAUSTED
from tests.storage.builders import T0, at, make_call, make_request, make_steps, make_topic

LEASE_S = 30.0
MAX_ATTEMPTS = 3


def new_job(count: int = 2, *, key: str | None = None, body: str = "body") -> NewJob:
    return NewJob(
        kind=JobKind.COURSE,
        requests=[make_request(topic_name=f"Topic {index}") for index in range(count)],
        body_hash=hashlib.sha256(body.encode()).hexdigest(),
        idempotency_key=key,
    )


@pytest.fixture
def jobs(database: Database) -> JobStore:
    return JobStore(database)


async def claim_at(jobs: JobStore, item_id: str, seconds: float) -> ClaimedItem | None:
    return await jobs.claim(item_id, now=at(seconds), lease_s=LEASE_S, max_attempts=MAX_ATTEMPTS)


async def first_item(jobs: JobStore) -> str:
    submission = await jobs.create_job(new_job(1), created_at=T0)
    return submission.job.items[0].id


async def claimed_at(jobs: JobStore, item_id: str, seconds: float) -> ClaimedItem:
    claimed = await claim_at(jobs, item_id, seconds)
    assert claimed is not None
    return claimed


async def store_success(
    database: Database, claimed: ClaimedItem, *, finished_s: float = 10.0
) -> None:
    generations = GenerationStore(database)
    await generations.start_request(claimed.request_id, claimed.request, created_at=at(1))
    await generations.finish_success(
        claimed.request_id,
        topic=make_topic(),
        prompt_version="v1",
        provider="azure",
        model="gpt-4o-mini",
        prompt_tokens=10,
        completion_tokens=20,
        steps=make_steps(),
        calls=[make_call()],
        finished_at=at(finished_s),
        lease=claimed.lease,
    )


async def test_new_job_has_pending_items_in_order(jobs: JobStore) -> None:
    submission = await jobs.create_job(new_job(3), created_at=T0)

    job = submission.job
    assert submission.created is True
    assert job.kind is JobKind.COURSE
    assert job.status is JobStatus.QUEUED
    assert job.created_at == T0
    assert job.finished_at is None
    assert [item.position for item in job.items] == [0, 1, 2]
    assert [item.request.topic_name for item in job.items] == ["Topic 0", "Topic 1", "Topic 2"]
    assert {item.status for item in job.items} == {ItemStatus.PENDING}
    assert job.progress.total == 3
    assert job.progress.pending == 3
    assert job.pending_items == [PendingItem(item.id, 0) for item in job.items]


async def test_resubmitted_key_returns_same_job(jobs: JobStore) -> None:
    first = await jobs.create_job(new_job(key="course-1"), created_at=T0)

    second = await jobs.create_job(new_job(key="course-1"), created_at=at(5))

    assert second.created is False
    assert second.job.id == first.job.id
    assert second.job.created_at == T0


async def test_key_with_other_body_conflicts(jobs: JobStore) -> None:
    first = await jobs.create_job(new_job(key="course-1", body="one"), created_at=T0)

    with pytest.raises(IdempotencyKeyConflictError) as caught:
        await jobs.create_job(new_job(key="course-1", body="two"), created_at=at(5))

    assert caught.value.job_id == first.job.id
    assert caught.value.idempotency_key == "course-1"
    assert "course-1" in caught.value.message


async def test_concurrent_same_key_makes_one_job(jobs: JobStore) -> None:
    submissions = await asyncio.gather(
        *(jobs.create_job(new_job(key="same"), created_at=T0) for _ in range(4))
    )

    assert len({submission.job.id for submission in submissions}) == 1
    assert sum(submission.created for submission in submissions) == 1


async def test_jobs_without_key_are_distinct(jobs: JobStore) -> None:
    first = await jobs.create_job(new_job(), created_at=T0)
    second = await jobs.create_job(new_job(), created_at=T0)

    assert first.job.id != second.job.id


async def test_unknown_job_is_not_found(jobs: JobStore) -> None:
    with pytest.raises(NotFoundError):
        await jobs.get_job("0" * 32)


async def test_claim_starts_attempt_with_lease(jobs: JobStore) -> None:
    item_id = await first_item(jobs)

    claimed = await claim_at(jobs, item_id, 1)

    assert claimed is not None
    assert claimed.attempt == 1
    assert claimed.lease_expires_at == at(1 + LEASE_S)
    assert claimed.request.topic_name == "Topic 0"
    item = (await jobs.get_job(claimed.job_id)).items[0]
    assert item.status is ItemStatus.RUNNING
    assert item.attempts == 1
    assert item.request_id == claimed.request_id
    assert item.started_at == at(1)


async def test_two_claimers_get_one_attempt(jobs: JobStore) -> None:
    item_id = await first_item(jobs)

    results = await asyncio.gather(*(claim_at(jobs, item_id, 1) for _ in range(5)))

    claimed = [result for result in results if result is not None]
    assert len(claimed) == 1
    assert claimed[0].attempt == 1


async def test_held_item_cannot_be_claimed(jobs: JobStore) -> None:
    item_id = await first_item(jobs)
    await claim_at(jobs, item_id, 1)

    again = await claim_at(jobs, item_id, 1 + LEASE_S - 1)

    assert again is None


async def test_expired_lease_is_taken_over(jobs: JobStore) -> None:
    item_id = await first_item(jobs)
    first = await claim_at(jobs, item_id, 1)
    assert first is not None

    second = await claim_at(jobs, item_id, 2 + LEASE_S)

    assert second is not None
    assert second.attempt == 2
    assert second.request_id != first.request_id


async def test_takeover_fails_abandoned_request(database: Database, jobs: JobStore) -> None:
    item_id = await first_item(jobs)
    abandoned = await claimed_at(jobs, item_id, 1)
    generations = GenerationStore(database)
    await generations.start_request(abandoned.request_id, abandoned.request, created_at=at(1))

    await claimed_at(jobs, item_id, 2 + LEASE_S)

    stored = await generations.get_request(abandoned.request_id)
    assert stored.status is RequestStatus.FAILED
    assert stored.error_code == "lease_lost"
    assert stored.finished_at == at(2 + LEASE_S)


async def test_release_keeps_finished_request(database: Database, jobs: JobStore) -> None:
    item_id = await first_item(jobs)
    stopped = await claimed_at(jobs, item_id, 1)
    generations = GenerationStore(database)
    await generations.start_request(stopped.request_id, stopped.request, created_at=at(1))
    await generations.finish_failure(
        stopped.request_id,
        error_code="cancelled",
        error_message="Stopped.",
        steps=[],
        calls=[],
        finished_at=at(2),
    )
    await jobs.release(stopped.lease)

    await claimed_at(jobs, item_id, 3)

    assert (await generations.get_request(stopped.request_id)).error_code == "cancelled"


async def test_item_put_back_waits_until_not_before(jobs: JobStore) -> None:
    item_id = await first_item(jobs)
    first = await claimed_at(jobs, item_id, 1)

    put_back = await jobs.retry_later(
        first.lease, not_before=at(20), error_code="no_key_available", error_message="Busy."
    )

    assert put_back is True
    job = await jobs.get_job(first.job_id)
    assert job.status is JobStatus.RUNNING
    item = job.items[0]
    assert item.status is ItemStatus.PENDING
    assert item.not_before == at(20)
    assert (item.error_code, item.error_message) == ("no_key_available", "Busy.")
    assert await claim_at(jobs, item_id, 19) is None
    second = await claimed_at(jobs, item_id, 20)
    assert second.attempt == 2
    running = (await jobs.get_job(first.job_id)).items[0]
    assert running.status is ItemStatus.RUNNING
    assert running.not_before is None


async def test_stale_attempt_cannot_put_item_back(jobs: JobStore) -> None:
    item_id = await first_item(jobs)
    stale = await claimed_at(jobs, item_id, 1)
    current = await claimed_at(jobs, item_id, 2 + LEASE_S)

    put_back = await jobs.retry_later(
        stale.lease, not_before=at(40), error_code="no_key_available", error_message="Busy."
    )

    assert put_back is False
    item = (await jobs.get_job(current.job_id)).items[0]
    assert item.status is ItemStatus.RUNNING
    assert item.attempts == 2


async def test_put_back_item_stranded_after_due(jobs: JobStore) -> None:
    item_id = await first_item(jobs)
    first = await claimed_at(jobs, item_id, 1)
    due_s = 3 * LEASE_S
    await jobs.retry_later(
        first.lease, not_before=at(due_s), error_code="no_key_available", error_message="Busy."
    )

    def stranded_at(seconds: float) -> Awaitable[list[PendingItem]]:
        return jobs.find_stranded(
            now=at(seconds), lease_s=LEASE_S, max_attempts=MAX_ATTEMPTS, limit=10
        )

    assert await stranded_at(due_s + LEASE_S - 1) == []
    assert await stranded_at(due_s + LEASE_S + 1) == [PendingItem(item_id, 1)]


async def test_stale_attempt_cannot_write(jobs: JobStore) -> None:
    item_id = await first_item(jobs)
    stale = await claim_at(jobs, item_id, 1)
    current = await claim_at(jobs, item_id, 2 + LEASE_S)
    assert stale is not None
    assert current is not None

    renewed = await jobs.renew_lease(stale.lease, now=at(40), lease_s=LEASE_S)
    released = await jobs.release(stale.lease)
    failed = await jobs.finish_failure(
        stale.lease, error_code="all_keys_failed", error_message="Boom.", finished_at=at(40)
    )

    assert renewed is False
    assert released is False
    assert failed is False
    item = (await jobs.get_job(current.job_id)).items[0]
    assert item.status is ItemStatus.RUNNING
    assert item.attempts == 2
    assert item.request_id == current.request_id


async def test_stale_success_stores_no_topic(database: Database, jobs: JobStore) -> None:
    item_id = await first_item(jobs)
    stale = await claim_at(jobs, item_id, 1)
    current = await claim_at(jobs, item_id, 2 + LEASE_S)
    assert stale is not None
    assert current is not None

    with pytest.raises(LeaseLostError) as caught:
        await store_success(database, stale)

    assert caught.value.item_id == item_id
    assert caught.value.attempt == 1
    generations = GenerationStore(database)
    assert await generations.count_topics() == 0
    assert (await generations.get_request(stale.request_id)).status is RequestStatus.RUNNING
    item = (await jobs.get_job(current.job_id)).items[0]
    assert item.status is ItemStatus.RUNNING


async def test_success_after_cancel_is_cancelled(database: Database, jobs: JobStore) -> None:
    item_id = await first_item(jobs)
    claimed = await claim_at(jobs, item_id, 1)
    assert claimed is not None
    await jobs.cancel_job(claimed.job_id, cancelled_at=at(2))

    with pytest.raises(ItemCancelledError) as caught:
        await store_success(database, claimed)

    assert caught.value.code == "cancelled"
    assert "The job was cancelled while attempt 1" in caught.value.message
    assert await GenerationStore(database).count_topics() == 0
    item = (await jobs.get_job(claimed.job_id)).items[0]
    assert item.status is ItemStatus.CANCELLED


async def test_success_marks_item_with_topic(database: Database, jobs: JobStore) -> None:
    item_id = await first_item(jobs)
    claimed = await claim_at(jobs, item_id, 1)
    assert claimed is not None

    await store_success(database, claimed)

    job = await jobs.get_job(claimed.job_id, with_topics=True)
    item = job.items[0]
    assert item.status is ItemStatus.SUCCEEDED
    assert item.request_id == claimed.request_id
    assert item.finished_at == at(10)
    assert item.topic == make_topic()
    assert job.status is JobStatus.SUCCEEDED
    assert job.finished_at == at(10)


async def test_second_success_is_rejected(database: Database, jobs: JobStore) -> None:
    item_id = await first_item(jobs)
    claimed = await claim_at(jobs, item_id, 1)
    assert claimed is not None
    await store_success(database, claimed)
    generations = GenerationStore(database)
    await generations.start_request("a" * 32, claimed.request, created_at=at(11))

    with pytest.raises(LeaseLostError):
        await generations.finish_success(
            "a" * 32,
            topic=make_topic(),
            prompt_version="v1",
            provider="azure",
            model="gpt-4o-mini",
            prompt_tokens=1,
            completion_tokens=1,
            steps=[],
            calls=[],
            finished_at=at(12),
            lease=claimed.lease,
        )

    assert await generations.count_topics() == 1
    assert await claim_at(jobs, item_id, 100 + LEASE_S) is None


async def test_topics_are_left_out_by_default(database: Database, jobs: JobStore) -> None:
    item_id = await first_item(jobs)
    claimed = await claim_at(jobs, item_id, 1)
    assert claimed is not None
    await store_success(database, claimed)

    job = await jobs.get_job(claimed.job_id)

    assert job.items[0].topic is None


async def test_failure_is_recorded_with_code(jobs: JobStore) -> None:
    item_id = await first_item(jobs)
    claimed = await claim_at(jobs, item_id, 1)
    assert claimed is not None

    stored = await jobs.finish_failure(
        claimed.lease,
        error_code="all_keys_failed",
        error_message="x" * 3000,
        finished_at=at(5),
    )

    assert stored is True
    item = (await jobs.get_job(claimed.job_id)).items[0]
    assert item.status is ItemStatus.FAILED
    assert item.error_code == "all_keys_failed"
    assert item.error_message is not None
    assert len(item.error_message) == 2000
    assert await claim_at(jobs, item_id, 100 + LEASE_S) is None


async def test_renewed_lease_keeps_item(jobs: JobStore) -> None:
    item_id = await first_item(jobs)
    claimed = await claim_at(jobs, item_id, 1)
    assert claimed is not None

    renewed = await jobs.renew_lease(claimed.lease, now=at(25), lease_s=LEASE_S)

    assert renewed is True
    assert await claim_at(jobs, item_id, 2 + LEASE_S) is None
    assert await claim_at(jobs, item_id, 26 + LEASE_S) is not None


async def test_released_item_is_claimed_at_once(jobs: JobStore) -> None:
    item_id = await first_item(jobs)
    first = await claim_at(jobs, item_id, 1)
    assert first is not None

    released = await jobs.release(first.lease)
    second = await claim_at(jobs, item_id, 2)

    assert released is True
    assert second is not None
    assert second.attempt == 2


async def test_item_out_of_attempts_fails(jobs: JobStore) -> None:
    item_id = await first_item(jobs)
    for attempt in range(MAX_ATTEMPTS):
        last = await claimed_at(jobs, item_id, attempt * (LEASE_S + 1))
    expired_s = MAX_ATTEMPTS * (LEASE_S + 1)

    unclaimable = await claim_at(jobs, item_id, expired_s)
    failed = await jobs.fail_exhausted(now=at(expired_s), max_attempts=MAX_ATTEMPTS)

    assert unclaimable is None
    assert failed == 1
    job = await jobs.get_job(last.job_id)
    item = job.items[0]
    assert item.status is ItemStatus.FAILED
    assert item.error_code == ATTEMPTS_EXHAUSTED
    assert job.status is JobStatus.FAILED


async def test_live_last_attempt_is_not_failed(jobs: JobStore) -> None:
    item_id = await first_item(jobs)
    for attempt in range(MAX_ATTEMPTS):
        last = await claimed_at(jobs, item_id, attempt * (LEASE_S + 1))

    failed = await jobs.fail_exhausted(
        now=last.lease_expires_at - timedelta(seconds=1), max_attempts=MAX_ATTEMPTS
    )

    assert failed == 0


async def test_claim_next_claims_oldest_first(jobs: JobStore) -> None:
    older = await jobs.create_job(new_job(2), created_at=T0)
    await jobs.create_job(new_job(2), created_at=at(1))

    claimed = await jobs.claim_next(limit=3, now=at(2), lease_s=LEASE_S, max_attempts=MAX_ATTEMPTS)

    assert len(claimed) == 3
    assert [item.item_id for item in claimed[:2]] == [item.id for item in older.job.items]


async def test_concurrent_claim_next_is_disjoint(jobs: JobStore) -> None:
    await jobs.create_job(new_job(6), created_at=T0)

    batches = await asyncio.gather(
        *(
            jobs.claim_next(limit=6, now=at(1), lease_s=LEASE_S, max_attempts=MAX_ATTEMPTS)
            for _ in range(3)
        )
    )

    claimed = [item.item_id for batch in batches for item in batch]
    assert len(claimed) == len(set(claimed))
    assert len(claimed) <= 6


async def test_cancel_stops_pending_and_running(jobs: JobStore) -> None:
    submission = await jobs.create_job(new_job(3), created_at=T0)
    job_id = submission.job.id
    running = await claim_at(jobs, submission.job.items[0].id, 1)
    assert running is not None

    job = await jobs.cancel_job(job_id, cancelled_at=at(2))

    assert job.status is JobStatus.CANCELLED
    assert job.cancelled_at == at(2)
    assert {item.status for item in job.items} == {ItemStatus.CANCELLED}
    assert await jobs.renew_lease(running.lease, now=at(3), lease_s=LEASE_S) is False
    assert await claim_at(jobs, submission.job.items[1].id, 3) is None


async def test_cancel_of_finished_job_changes_nothing(jobs: JobStore) -> None:
    item_id = await first_item(jobs)
    claimed = await claim_at(jobs, item_id, 1)
    assert claimed is not None
    await jobs.finish_failure(
        claimed.lease, error_code="all_keys_failed", error_message="Boom.", finished_at=at(2)
    )

    job = await jobs.cancel_job(claimed.job_id, cancelled_at=at(3))

    assert job.status is JobStatus.FAILED
    assert job.cancelled_at is None


async def test_cancel_of_unknown_job_is_not_found(jobs: JobStore) -> None:
    with pytest.raises(NotFoundError):
        await jobs.cancel_job("0" * 32, cancelled_at=T0)


async def test_stranded_items_are_found(jobs: JobStore) -> None:
    old = await jobs.create_job(new_job(3), created_at=T0)
    fresh = await jobs.create_job(new_job(1), created_at=at(2 * LEASE_S))
    expired = await claim_at(jobs, old.job.items[0].id, 1)
    live = await claim_at(jobs, old.job.items[1].id, 2 * LEASE_S)
    assert expired is not None
    assert live is not None

    stranded = await jobs.find_stranded(
        now=at(2 * LEASE_S + 1), lease_s=LEASE_S, max_attempts=MAX_ATTEMPTS, limit=10
    )

    assert stranded == [
        PendingItem(old.job.items[0].id, 1),
        PendingItem(old.job.items[2].id, 0),
    ]
    assert fresh.job.items[0].id not in {item.item_id for item in stranded}


async def test_partly_failed_job_reports_counts(database: Database, jobs: JobStore) -> None:
    submission = await jobs.create_job(new_job(3), created_at=T0)
    first, second, third = (item.id for item in submission.job.items)
    await store_success(database, await claimed_at(jobs, first, 1), finished_s=2)
    failed = await claimed_at(jobs, second, 1)
    await jobs.finish_failure(
        failed.lease, error_code="all_keys_failed", error_message="Boom.", finished_at=at(3)
    )
    running = await jobs.get_job(submission.job.id)
    last = await claimed_at(jobs, third, 4)

    await jobs.finish_failure(
        last.lease, error_code="invalid_model_output", error_message="Bad.", finished_at=at(9)
    )

    finished = await jobs.get_job(submission.job.id)
    assert running.status is JobStatus.RUNNING
    assert finished.status is JobStatus.PARTIALLY_FAILED
    assert finished.progress.succeeded == 1
    assert finished.progress.failed == 2
    assert finished.progress.finished == 3
    assert finished.finished_at == at(9)


async def test_cancelled_call_still_stores_failure(jobs: JobStore) -> None:
    claimed = await claimed_at(jobs, await first_item(jobs), 1)
    call = asyncio.create_task(
        jobs.finish_failure(
            claimed.lease, error_code="all_keys_failed", error_message="Boom.", finished_at=at(2)
        )
    )
    await asyncio.sleep(0)

    call.cancel()

    with pytest.raises(asyncio.CancelledError):
        await call
    item = (await jobs.get_job(claimed.job_id)).items[0]
    assert item.status is ItemStatus.FAILED


async def test_unfinished_jobs_lists_newest_first(jobs: JobStore) -> None:
    older = (await jobs.create_job(new_job(1), created_at=T0)).job
    newer = (await jobs.create_job(new_job(1), created_at=T0 + timedelta(seconds=1))).job
    done = (await jobs.create_job(new_job(1), created_at=T0 + timedelta(seconds=2))).job
    await jobs.cancel_job(done.id, cancelled_at=T0 + timedelta(seconds=3))

    unfinished = await jobs.unfinished_jobs()

    assert [job.id for job in unfinished] == [newer.id, older.id]
