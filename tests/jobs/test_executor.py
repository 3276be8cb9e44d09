"""One attempt at an item: its lease, its takeover by another attempt, and its outcome."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from microtopic.config import JobsConfig
from microtopic.jobs.executor import ItemExecutor, ItemOutcome, retry_delay_s
from microtopic.storage import ClaimedItem, Database, ItemStatus, PendingItem, RequestStatus
from tests.harness import SimulatorHarness
from tests.jobs.support import (
    TEST_JOBS,
    JobParts,
    build_parts,
    make_course,
)

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


class RecordingScheduler:
    """Keeps the items an executor hands over for a later attempt."""

    def __init__(self) -> None:
        self.items: list[PendingItem] = []

    async def dispatch(self, items: Sequence[PendingItem]) -> None:
        self.items.extend(items)


async def test_transient_failure_puts_item_back(
    database: Database, azure_simulator: SimulatorHarness
) -> None:
    parts = build_parts(database, azure_simulator, keys=[azure_simulator.azure_key("east")])
    scheduler = RecordingScheduler()
    executor = ItemExecutor(parts.generation_service, parts.store, parts.config, retries=scheduler)
    await azure_simulator.set_fault("east", "server_error")
    claimed = await claim_first_item(parts)
    before = datetime.now(UTC)

    outcome = await executor.run(claimed)

    assert outcome is ItemOutcome.RETRY_LATER
    item = (await parts.store.get_job(claimed.job_id)).items[0]
    assert item.status is ItemStatus.PENDING
    assert item.error_code == "all_keys_failed"
    assert item.error_message is not None
    assert item.error_message.startswith(f"Attempt 1 of {parts.config.max_attempts} failed")
    assert item.not_before is not None
    delay_s = (item.not_before - before).total_seconds()
    assert parts.config.retry_delay_s <= delay_s
    assert scheduler.items == [PendingItem(claimed.item_id, 1, item.not_before)]


async def test_item_succeeds_after_transient_failure(
    database: Database, azure_simulator: SimulatorHarness
) -> None:
    keys = [azure_simulator.azure_key(name) for name in ("east", "west")]
    parts = build_parts(database, azure_simulator, keys=keys)
    # The first attempt's three calls go east, west, east: all fail, and no circuit opens.
    await azure_simulator.set_fault("east", "server_error", count=2)
    await azure_simulator.set_fault("west", "server_error", count=1)
    job = await parts.run_course(1)

    item = job.items[0]
    assert item.status is ItemStatus.SUCCEEDED
    assert item.attempts == 2
    assert item.error_code is None
    assert item.not_before is None


async def test_last_attempt_fails_the_item(
    database: Database, azure_simulator: SimulatorHarness
) -> None:
    config = TEST_JOBS.model_copy(update={"max_attempts": 1})
    parts = build_parts(
        database, azure_simulator, config=config, keys=[azure_simulator.azure_key("east")]
    )
    await azure_simulator.set_fault("east", "server_error")
    claimed = await claim_first_item(parts)

    outcome = await parts.executor.run(claimed)

    assert outcome is ItemOutcome.FAILED
    item = (await parts.store.get_job(claimed.job_id)).items[0]
    assert item.status is ItemStatus.FAILED
    assert item.error_code == "all_keys_failed"
    assert item.not_before is None
    assert "This was attempt 1 of 1, the last." in (item.error_message or "")


def test_retry_delay_doubles_up_to_its_cap() -> None:
    config = JobsConfig(retry_delay_s=2.0, max_retry_delay_s=10.0)

    delays = [retry_delay_s(config, attempt, None) for attempt in (1, 2, 3, 4)]

    for delay, expected in zip(delays, (2.0, 4.0, 8.0, 10.0), strict=True):
        assert expected <= delay <= expected * 1.1
    assert 6.0 <= retry_delay_s(config, 1, 6.0) <= 6.6
    assert 10.0 <= retry_delay_s(config, 1, 600.0) <= 11.0
