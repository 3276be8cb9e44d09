"""The in-process runner over SQLite and PostgreSQL, with the simulator behind the gateway."""

from __future__ import annotations

from datetime import UTC, datetime

from microtopic.errors import NotFoundError
from microtopic.jobs.runner import InProcessRunner
from microtopic.storage import (
    Database,
    GenerationStore,
    ItemStatus,
    JobStatus,
    RequestStatus,
)
from tests.harness import SimulatorHarness
from tests.jobs.support import TEST_JOBS, build_parts, is_finished, make_course, wait_until


async def request_status(store: GenerationStore, request_id: str | None) -> RequestStatus | None:
    """Return the status of the request, or None when its attempt stopped before storing it."""
    assert request_id is not None
    try:
        return (await store.get_request(request_id)).status
    except NotFoundError:
        return None


async def test_runner_runs_every_item(
    database: Database, azure_simulator: SimulatorHarness
) -> None:
    parts = build_parts(database, azure_simulator)
    job = await parts.run_course(5)

    assert job.status is JobStatus.SUCCEEDED
    assert job.progress.succeeded == 5
    assert {item.attempts for item in job.items} == {1}
    with_topics = await parts.store.get_job(job.id, with_topics=True)
    for item in with_topics.items:
        assert item.topic is not None
        assert item.topic.topic_name == item.request.topic_name
        assert item.request_id is not None
        stored = await parts.generations.get_request(item.request_id)
        assert stored.status is RequestStatus.SUCCEEDED


async def test_failed_item_does_not_stop_batch(
    database: Database, azure_simulator: SimulatorHarness
) -> None:
    config = TEST_JOBS.model_copy(update={"concurrency": 1})
    parts = build_parts(
        database, azure_simulator, config=config, keys=[azure_simulator.azure_key("east")]
    )
    # The first call, which belongs to the first item, is refused by the content filter.
    await azure_simulator.set_fault("east", "content_filter_prompt", count=1)
    job = await parts.run_course(3)

    assert job.status is JobStatus.PARTIALLY_FAILED
    assert job.progress.failed == 1
    assert job.progress.succeeded == 2
    failed = job.items[0]
    assert failed.status is ItemStatus.FAILED
    assert failed.error_code == "content_filtered"
    assert failed.error_message
    assert failed.attempts == 1


async def test_all_failed_items_fail_job(
    database: Database, azure_simulator: SimulatorHarness
) -> None:
    parts = build_parts(database, azure_simulator)
    for name in ("east", "west", "north"):
        await azure_simulator.set_fault(name, "revoked")
    job = await parts.run_course(3)

    assert job.status is JobStatus.FAILED
    assert job.progress.failed == 3
    # Revoked keys may come back, so each item was tried as often as it may be.
    for item in job.items:
        assert item.error_code in ("all_keys_failed", "no_key_available")
        assert item.attempts == TEST_JOBS.max_attempts
        assert f"attempt {TEST_JOBS.max_attempts} of {TEST_JOBS.max_attempts}" in (
            item.error_message or ""
        )


async def test_runner_takes_over_expired_lease(
    database: Database, azure_simulator: SimulatorHarness
) -> None:
    parts = build_parts(database, azure_simulator)
    submission = await parts.service().submit_course(make_course(3))
    job_id = submission.job.id
    # A process that claimed the first item and died, so no process renews its lease.
    dead = await parts.store.claim(
        submission.job.items[0].id,
        now=datetime.now(UTC),
        lease_s=TEST_JOBS.lease_s,
        max_attempts=TEST_JOBS.max_attempts,
    )
    assert dead is not None

    runner = parts.runner()
    runner.start()
    try:
        job = await wait_until(lambda: parts.store.get_job(job_id), is_finished)
    finally:
        await runner.aclose()

    assert job.status is JobStatus.SUCCEEDED
    assert [item.attempts for item in job.items] == [2, 1, 1]
    assert job.items[0].request_id != dead.request_id


async def test_restarted_runner_resumes_job(
    database: Database, slow_simulator: SimulatorHarness
) -> None:
    parts = build_parts(database, slow_simulator)
    first = parts.runner()
    first.start()
    submission = await parts.service(first).submit_course(make_course(6))
    job_id = submission.job.id
    # Stop while items run: after the first two finished, as two more start.
    await wait_until(lambda: parts.store.get_job(job_id), lambda job: job.progress.succeeded >= 2)
    await first.aclose()
    stopped = await parts.store.get_job(job_id)

    second: InProcessRunner = parts.runner()
    second.start()
    try:
        job = await wait_until(lambda: parts.store.get_job(job_id), is_finished)
    finally:
        await second.aclose()

    assert stopped.progress.running == 0
    assert stopped.progress.pending + stopped.progress.succeeded == 6
    assert job.status is JobStatus.SUCCEEDED
    for before, after in zip(stopped.items, job.items, strict=True):
        if before.status is ItemStatus.SUCCEEDED:
            assert after.attempts == before.attempts == 1
            assert after.request_id == before.request_id
        elif before.attempts:
            # Interrupted at the stop and put back; the next attempt finished it.
            assert after.attempts == before.attempts + 1
            assert after.request_id != before.request_id
            interrupted = await request_status(parts.generations, before.request_id)
            assert interrupted is not RequestStatus.SUCCEEDED
    assert await parts.generations.count_topics() == 6


async def test_cancel_stops_running_items(
    database: Database, slow_simulator: SimulatorHarness
) -> None:
    parts = build_parts(database, slow_simulator)
    runner = parts.runner()
    runner.start()
    jobs = parts.service(runner)
    try:
        submission = await jobs.submit_course(make_course(4))
        job_id = submission.job.id
        await wait_until(lambda: parts.store.get_job(job_id), lambda job: job.progress.running > 0)

        cancelled = await jobs.cancel(job_id)
        job = await wait_until(
            lambda: parts.store.get_job(job_id),
            lambda job: all(
                item.request_id is None or item.status is ItemStatus.CANCELLED for item in job.items
            ),
        )
    finally:
        await runner.aclose()

    assert cancelled.status is JobStatus.CANCELLED
    assert job.status is JobStatus.CANCELLED
    assert job.cancelled_at is not None
    assert job.progress.cancelled == 4
    started = [item for item in job.items if item.request_id is not None]
    assert started
    for item in started:
        status = await request_status(parts.generations, item.request_id)
        assert status is not RequestStatus.SUCCEEDED
    assert await parts.generations.count_topics() == 0
