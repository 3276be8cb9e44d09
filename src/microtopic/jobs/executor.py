"""The executor: runs one claimed job item through the generation service, and records how it ended.

While the item runs, the executor renews its lease every third of the lease's
length. When a renewal finds that the attempt no longer holds the item (the job
was cancelled, or the lease expired and another process took the item over), it
cancels the generation. A success is recorded by the generation service, in the
transaction that stores the topic; a failure is recorded here.

A failure with a transient cause, such as no key free before the deadline, puts
the item back to pending with a time before which it is not claimed, while the
item has attempts left. The delay doubles with each attempt, and is at least the
retry-after that the error carries.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Protocol

from microtopic.config import JobsConfig
from microtopic.errors import LeaseLostError, MicrotopicError, StorageError
from microtopic.service import GenerationService
from microtopic.storage import ClaimedItem, ItemLease, JobStore, PendingItem

logger = logging.getLogger(__name__)

INTERNAL_ERROR_MESSAGE = (
    "An unexpected error stopped the generation; the server log has the details."
)


class ItemOutcome(StrEnum):
    """The end of one attempt at an item, as this process saw it."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"
    RETRY_LATER = "retry_later"
    LEASE_LOST = "lease_lost"
    NOT_CLAIMED = "not_claimed"


class RetryScheduler(Protocol):
    """The receiver of items put back for a later attempt, which runs each when it is due."""

    async def dispatch(self, items: Sequence[PendingItem]) -> None: ...


class ItemExecutor:
    """Claims job items and runs each claimed one to its end.

    `retries` receives the items put back for a later attempt. Without it, they wait
    in the database for a runner that polls, as the in-process runner does.
    """

    def __init__(
        self,
        service: GenerationService,
        store: JobStore,
        config: JobsConfig,
        *,
        retries: RetryScheduler | None = None,
    ) -> None:
        self._service = service
        self._store = store
        self._config = config
        self._retries = retries

    async def claim_and_run(self, item_id: str) -> ItemOutcome:
        """Claim the item and run it, or return `NOT_CLAIMED` when it cannot be claimed.

        An item cannot be claimed when it is finished, or held by a live attempt.
        """
        claiming = asyncio.ensure_future(
            self._store.claim(
                item_id,
                now=datetime.now(UTC),
                lease_s=self._config.lease_s,
                max_attempts=self._config.max_attempts,
            )
        )
        try:
            claimed = await asyncio.shield(claiming)
        except asyncio.CancelledError:
            # Cancelled while the claim was being written (a worker stopping): the claim
            # still lands, so the item is put back at once rather than when its lease ends.
            await asyncio.wait({claiming})
            if not claiming.cancelled() and claiming.exception() is None:
                late = claiming.result()
                if late is not None:
                    await self._stop_and_release(late, None)
            raise
        if claimed is None:
            logger.debug("job item %s: not claimable, so this run does nothing", item_id)
            return ItemOutcome.NOT_CLAIMED
        return await self.run(claimed)

    async def run(self, claimed: ClaimedItem) -> ItemOutcome:
        """Run the claimed item until it ends, and return how it ended.

        Cancelling this call stops the generation and puts the item back to pending,
        for another attempt to claim at once.
        """
        logger.info(
            "job %s item %d: attempt %d started as request %s",
            claimed.job_id,
            claimed.position,
            claimed.attempt,
            claimed.request_id,
        )
        generation = asyncio.create_task(
            self._service.generate(
                claimed.request, request_id=claimed.request_id, lease=claimed.lease
            )
        )
        keeper = asyncio.create_task(self._keep_lease(claimed, generation))
        try:
            await asyncio.wait({generation})
        except asyncio.CancelledError:
            await self._stop_and_release(claimed, generation)
            raise
        finally:
            keeper.cancel()
            await asyncio.wait({keeper})
        return await self._record(claimed, generation)

    async def _keep_lease(self, claimed: ClaimedItem, generation: asyncio.Task[object]) -> None:
        interval_s = self._config.lease_s / 3
        while True:
            await asyncio.sleep(interval_s)
            try:
                held = await self._store.renew_lease(
                    claimed.lease, now=datetime.now(UTC), lease_s=self._config.lease_s
                )
            except StorageError as exc:
                logger.warning(
                    "job item %s: could not renew the lease of attempt %d, retrying in %.1f s: %s",
                    claimed.item_id,
                    claimed.attempt,
                    interval_s,
                    exc.message,
                )
                continue
            if not held:
                logger.warning(
                    "job item %s: attempt %d lost its lease (the job was cancelled, or "
                    "another process took the item over), so its generation is cancelled",
                    claimed.item_id,
                    claimed.attempt,
                )
                generation.cancel()
                return

    async def _stop_and_release(
        self, claimed: ClaimedItem, generation: asyncio.Task[object] | None
    ) -> None:
        if generation is not None:
            generation.cancel()
            await asyncio.wait({generation})
        try:
            # Shielded: the item must go back even though this task is being cancelled.
            released = await asyncio.shield(self._store.release(claimed.lease))
        except StorageError as exc:
            logger.warning(
                "job item %s: could not release attempt %d, so it is taken over when its "
                "lease expires: %s",
                claimed.item_id,
                claimed.attempt,
                exc.message,
            )
            return
        if released:
            logger.info(
                "job item %s: attempt %d stopped and put the item back to pending",
                claimed.item_id,
                claimed.attempt,
            )

    async def _record(self, claimed: ClaimedItem, generation: asyncio.Task[object]) -> ItemOutcome:
        if generation.cancelled():
            return ItemOutcome.LEASE_LOST
        exc = generation.exception()
        if exc is None:
            logger.info("job %s item %d: succeeded", claimed.job_id, claimed.position)
            return ItemOutcome.SUCCEEDED
        if isinstance(exc, LeaseLostError):
            logger.warning("job item %s: %s", claimed.item_id, exc.message)
            return ItemOutcome.LEASE_LOST

        if isinstance(exc, MicrotopicError):
            if exc.transient and claimed.attempt < self._config.max_attempts:
                return await self._retry_later(claimed, exc)
            code, message = exc.code, exc.message
            if exc.transient:
                message = (
                    f"{message} This was attempt {claimed.attempt} of "
                    f"{self._config.max_attempts}, the last."
                )
        else:
            logger.error(
                "job item %s: attempt %d failed unexpectedly",
                claimed.item_id,
                claimed.attempt,
                exc_info=exc,
            )
            code, message = "internal_error", INTERNAL_ERROR_MESSAGE
        return await self._record_failure(claimed.lease, code, message)

    async def _retry_later(self, claimed: ClaimedItem, exc: MicrotopicError) -> ItemOutcome:
        delay_s = retry_delay_s(self._config, claimed.attempt, getattr(exc, "retry_after_s", None))
        not_before = datetime.now(UTC) + timedelta(seconds=delay_s)
        message = (
            f"Attempt {claimed.attempt} of {self._config.max_attempts} failed, and the item "
            f"is tried again at {not_before:%H:%M:%S} UTC: {exc.message}"
        )
        stored = await self._store.retry_later(
            claimed.lease, not_before=not_before, error_code=exc.code, error_message=message
        )
        if not stored:
            logger.warning(
                "job item %s: attempt %d failed with %s after it lost its lease",
                claimed.item_id,
                claimed.attempt,
                exc.code,
            )
            return ItemOutcome.LEASE_LOST
        logger.info(
            "job item %s: attempt %d failed with %s; next attempt in %.1f s",
            claimed.item_id,
            claimed.attempt,
            exc.code,
            delay_s,
        )
        if self._retries is not None:
            pending = PendingItem(claimed.item_id, claimed.attempt, not_before)
            await self._retries.dispatch([pending])
        return ItemOutcome.RETRY_LATER

    async def _record_failure(self, lease: ItemLease, code: str, message: str) -> ItemOutcome:
        stored = await self._store.finish_failure(
            lease, error_code=code, error_message=message, finished_at=datetime.now(UTC)
        )
        if not stored:
            logger.warning(
                "job item %s: attempt %d failed with %s after it lost its lease; the "
                "failure is not recorded",
                lease.item_id,
                lease.attempt,
                code,
            )
            return ItemOutcome.LEASE_LOST
        logger.info("job item %s: failed with %s", lease.item_id, code)
        return ItemOutcome.FAILED


def retry_delay_s(config: JobsConfig, attempt: int, retry_after_s: float | None) -> float:
    """Return how long an item waits after its `attempt`-th attempt failed for a passing cause.

    `jobs.retry_delay_s` doubles with each attempt up to `jobs.max_retry_delay_s`; a
    longer retry-after from the error wins. A tenth is added at random, so that the
    items that failed together are not all tried again at the same moment.
    """
    backoff_s = config.retry_delay_s * 2.0 ** min(attempt - 1, 30)
    delay_s = min(max(backoff_s, retry_after_s or 0.0), config.max_retry_delay_s)
    return delay_s * (1 + random.uniform(0, 0.1))
