"""One attempt at an item: its lease, its takeover by another attempt, and its outcome."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from microtopic.jobs.executor import ItemOutcome
from microtopic.storage import ClaimedItem, Database, ItemStatus, RequestStatus
from tests.harness import SimulatorHarness
from tests.jobs.support import TEST_JOBS, JobParts, build_parts, make_course

LONG_LEASE = TEST_JOBS.model_copy(update={"lease_s": 30.0})


async def claim_first_item(parts: JobParts) -> ClaimedItem:
    submission = await parts.service().submit_course(make_course(1))
    claimed = await parts.store.claim(
        submission.job.items[0].id,
        now=datetime.now(UTC),
        lease_s=parts.config.lease_s,
        max_attempts=parts.config.max_attempts,
    )
    assert claimed is not None
    return claimed


async def take_over(parts: JobParts, claimed: ClaimedItem) -> ClaimedItem:
    """Claim the item as a process would whose clock is past the lease."""
    later = datetime.now(UTC) + timedelta(seconds=parts.config.lease_s + 1)
    taken = await parts.store.claim(
        claimed.item_id,
        now=later,
        lease_s=parts.config.lease_s,
        max_attempts=parts.config.max_attempts,
    )
    assert taken is not None
    return taken


async def test_attempt_runs_item_to_success(
    database: Database, azure_simulator: SimulatorHarness
) -> None:
    parts = build_parts(database, azure_simulator)
    claimed = await claim_first_item(parts)

    outcome = await parts.executor.run(claimed)

    assert outcome is ItemOutcome.SUCCEEDED
    item = (await parts.store.get_job(claimed.job_id)).items[0]
    assert item.status is ItemStatus.SUCCEEDED
    assert item.request_id == claimed.request_id


async def test_taken_over_attempt_is_stopped(
    database: Database, slow_simulator: SimulatorHarness
) -> None:
    parts = build_parts(database, slow_simulator)
    claimed = await claim_first_item(parts)
    attempt = asyncio.create_task(parts.executor.run(claimed))
    await asyncio.sleep(0.1)

    taken = await take_over(parts, claimed)
    outcome = await asyncio.wait_for(attempt, timeout=parts.config.lease_s)

    assert outcome is ItemOutcome.LEASE_LOST
    item = (await parts.store.get_job(claimed.job_id)).items[0]
    assert item.status is ItemStatus.RUNNING
    assert item.attempts == taken.attempt == 2
    assert await parts.generations.count_topics() == 0


async def test_success_after_takeover_is_discarded(
    database: Database, slow_simulator: SimulatorHarness
) -> None:
    # With a long lease, the stale attempt does not renew before its generation ends.
    parts = build_parts(database, slow_simulator, config=LONG_LEASE)
    claimed = await claim_first_item(parts)
    attempt = asyncio.create_task(parts.executor.run(claimed))
    await asyncio.sleep(0.1)

    await take_over(parts, claimed)
    outcome = await attempt

    assert outcome is ItemOutcome.LEASE_LOST
    assert await parts.generations.count_topics() == 0
    stale = await parts.generations.get_request(claimed.request_id)
    assert stale.status is RequestStatus.FAILED
    assert stale.error_code == "lease_lost"
    item = (await parts.store.get_job(claimed.job_id)).items[0]
    assert item.status is ItemStatus.RUNNING
    assert item.attempts == 2


async def test_finished_item_is_not_run_again(
    database: Database, azure_simulator: SimulatorHarness
) -> None:
    parts = build_parts(database, azure_simulator)
    claimed = await claim_first_item(parts)
    await parts.executor.run(claimed)
    calls = await azure_simulator.calls()

    outcome = await parts.executor.claim_and_run(claimed.item_id)

    assert outcome is ItemOutcome.NOT_CLAIMED
    assert await azure_simulator.calls() == calls


async def test_cancelled_attempt_puts_item_back(
    database: Database, slow_simulator: SimulatorHarness
) -> None:
    parts = build_parts(database, slow_simulator)
    claimed = await claim_first_item(parts)
    attempt = asyncio.create_task(parts.executor.run(claimed))
    await asyncio.sleep(0.1)

    attempt.cancel()
    await asyncio.wait({attempt})

    assert attempt.cancelled()
    item = (await parts.store.get_job(claimed.job_id)).items[0]
    assert item.status is ItemStatus.PENDING
    assert item.attempts == 1
