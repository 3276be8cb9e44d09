"""The arq queue in a real Redis: one arq job per attempt, Redis errors, and the sweep."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
import redis.asyncio
from pydantic import SecretStr

from microtopic.config import JobRunnerKind, JobsConfig, Settings
from microtopic.errors import QueueUnavailableError
from microtopic.jobs.queue import ArqQueue, arq_job_id
from microtopic.jobs.service import JobService
from microtopic.jobs.worker import Sweeper
from microtopic.storage import Database, JobKind, JobStore, NewJob, PendingItem, Submission
from tests.jobs.support import make_course

# Nothing listens on port 1 of the loopback interface, so a connection is refused at once.
UNREACHABLE_URL = "redis://:queue-password@127.0.0.1:1/0"
SWEEP_JOBS = JobsConfig(runner=JobRunnerKind.ARQ, lease_s=5.0)


def queue_settings(url: str, namespace: str) -> Settings:
    return Settings(redis_url=SecretStr(url), redis_namespace=namespace, jobs=SWEEP_JOBS)


async def delete_arq_keys(url: str, namespace: str) -> None:
    """Delete the keys arq made for this test's jobs: arq's prefixes come before our ids."""
    client = redis.asyncio.Redis.from_url(url)
    try:
        keys = [key async for key in client.scan_iter(match=f"arq:*:{namespace}:*")]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


@pytest.fixture
async def queue(redis_url: str, redis_namespace: str) -> AsyncIterator[ArqQueue]:
    arq_queue = ArqQueue.from_settings(queue_settings(redis_url, redis_namespace))
    yield arq_queue
    await arq_queue.aclose()
    await delete_arq_keys(redis_url, redis_namespace)


async def queued_job_ids(queue: ArqQueue) -> list[str]:
    members = await queue.redis.zrange(queue.queue_name, 0, -1)
    return [member.decode() for member in members]


async def test_item_is_queued_once_per_attempt(queue: ArqQueue) -> None:
    item = PendingItem("a" * 32, 0)

    first = await queue.enqueue([item])
    again = await queue.enqueue([item])
    next_attempt = await queue.enqueue([PendingItem("a" * 32, 1)])

    assert first == 1
    assert again == 0
    assert next_attempt == 1
    assert await queued_job_ids(queue) == [
        arq_job_id(queue.namespace, item),
        arq_job_id(queue.namespace, PendingItem("a" * 32, 1)),
    ]


async def test_queue_name_is_in_namespace(queue: ArqQueue, redis_namespace: str) -> None:
    await queue.enqueue([PendingItem("b" * 32, 0)])

    assert queue.queue_name == f"{redis_namespace}:queue"
    assert await queued_job_ids(queue) == [f"{redis_namespace}:item:{'b' * 32}:0"]


async def test_unreachable_redis_raises_queue_error() -> None:
    queue = ArqQueue.from_settings(queue_settings(UNREACHABLE_URL, "microtopic-test-down"))
    try:
        with pytest.raises(QueueUnavailableError) as caught:
            await queue.enqueue([PendingItem("c" * 32, 0)])
    finally:
        await queue.aclose()

    assert caught.value.code == "queue_unavailable"
    assert "Redis at 127.0.0.1:1" in caught.value.message
    assert "queue-password" not in caught.value.message


async def test_dispatch_leaves_items_when_redis_fails(caplog: pytest.LogCaptureFixture) -> None:
    queue = ArqQueue.from_settings(queue_settings(UNREACHABLE_URL, "microtopic-test-down"))
    try:
        await queue.dispatch([PendingItem("c" * 32, 0)])
    finally:
        await queue.aclose()

    assert "stay pending in the database" in caplog.text
    assert "queue-password" not in caplog.text


async def test_submission_queues_its_items(database: Database, queue: ArqQueue) -> None:
    jobs = JobService(JobStore(database), queue)

    submission = await jobs.submit_course(make_course(3))

    expected = {arq_job_id(queue.namespace, item) for item in submission.job.pending_items}
    assert set(await queued_job_ids(queue)) == expected


async def test_sweep_queues_stranded_items(database: Database, queue: ArqQueue) -> None:
    store = JobStore(database)
    submission = await JobService(store, None).submit_course(make_course(3))
    items = submission.job.items
    long_ago = datetime.now(UTC) - timedelta(seconds=3 * SWEEP_JOBS.lease_s)
    # A worker claimed the first item and died; its lease has expired.
    dead = await store.claim(items[0].id, now=long_ago, lease_s=SWEEP_JOBS.lease_s, max_attempts=3)
    assert dead is not None

    queued = await Sweeper(store, queue, SWEEP_JOBS).sweep()
    job_ids = await queued_job_ids(queue)

    assert queued == 1
    assert len(job_ids) == 1
    # A claimed item is queued under a new id per sweep round, not its first claim's.
    base = arq_job_id(queue.namespace, PendingItem(items[0].id, 1))
    assert job_ids[0].startswith(f"{base}:sweep-")


def test_sweep_round_gives_new_ids() -> None:
    fresh = PendingItem("a" * 32, 0)
    claimed = PendingItem("b" * 32, 1)

    assert arq_job_id("ns", fresh, sweep_round=7) == f"ns:item:{'a' * 32}:0:sweep-7"
    assert arq_job_id("ns", claimed, sweep_round=7) == f"ns:item:{'b' * 32}:1:sweep-7"
    assert arq_job_id("ns", claimed, sweep_round=8) != arq_job_id("ns", claimed, sweep_round=7)


async def submit_long_ago(store: JobStore, queue: ArqQueue, topics: int) -> Submission:
    """Submit a course three leases ago, and queue its items."""
    long_ago = datetime.now(UTC) - timedelta(seconds=3 * SWEEP_JOBS.lease_s)
    job = NewJob(kind=JobKind.COURSE, requests=make_course(topics).requests(), body_hash="0" * 64)
    submission = await store.create_job(job, created_at=long_ago)
    await queue.enqueue(submission.job.pending_items)
    return submission


async def test_sweep_leaves_items_whose_job_waits(database: Database, queue: ArqQueue) -> None:
    store = JobStore(database)
    submission = await submit_long_ago(store, queue, 2)
    before = set(await queued_job_ids(queue))

    queued = await Sweeper(store, queue, SWEEP_JOBS).sweep()

    assert queued == 0
    assert set(await queued_job_ids(queue)) == before
    assert len(before) == len(submission.job.items)


async def test_sweep_requeues_item_started_by_dead_worker(
    database: Database, queue: ArqQueue
) -> None:
    store = JobStore(database)
    submission = await submit_long_ago(store, queue, 1)
    item = submission.job.items[0]
    first_job = arq_job_id(queue.namespace, PendingItem(item.id, 0))
    # What a worker leaves when it is killed after arq started the job, before the claim.
    await queue.redis.set(f"arq:in-progress:{first_job}", b"1", px=600_000)

    queued = await Sweeper(store, queue, SWEEP_JOBS).sweep()

    assert queued == 1
    swept = [job_id for job_id in await queued_job_ids(queue) if job_id != first_job]
    assert len(swept) == 1
    assert swept[0].startswith(f"{first_job}:sweep-")
