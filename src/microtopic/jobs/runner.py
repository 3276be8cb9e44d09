"""The in-process runner: claims job items from the database and runs them in this process.

It runs up to `jobs.concurrency` items at once. It looks for claimable items when
a job is submitted here, when one of its items ends, and every
`jobs.poll_interval_s` seconds. The polling picks up the items of jobs submitted
by other processes, and the items of processes that died. A process that
died leaves its items running under a lease, which are taken over once the lease
expires. At shutdown the runner stops its items and puts them back to pending, for
the next process to resume at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from datetime import UTC, datetime

from microtopic.config import JobsConfig
from microtopic.errors import StorageError
from microtopic.jobs.executor import ItemExecutor
from microtopic.storage import ClaimedItem, JobStore, PendingItem

logger = logging.getLogger(__name__)


class InProcessRunner:
    """Runs the items of every job in the database, a few at a time, in this process."""

    def __init__(self, store: JobStore, executor: ItemExecutor, config: JobsConfig) -> None:
        self._store = store
        self._executor = executor
        self._config = config
        self._wake_up = asyncio.Event()
        self._loop_task: asyncio.Task[None] | None = None
        self._stopping = False
        self._next_exhaustion_check = 0.0
        # Item id to the job id and the task that runs the item.
        self._running: dict[str, tuple[str, asyncio.Task[object]]] = {}

    def start(self) -> None:
        """Start looking for items to run, in a background task."""
        self._loop_task = asyncio.create_task(self._run(), name="microtopic-job-runner")
        logger.info(
            "in-process job runner started, running up to %d items at once",
            self._config.concurrency,
        )

    async def dispatch(self, items: Sequence[PendingItem]) -> None:
        """Look for items now, because `items` have just been submitted."""
        self._wake_up.set()

    async def cancel(self, job_id: str) -> None:
        """Stop the items of the cancelled job that run here, without waiting for a renewal."""
        for running_job_id, task in list(self._running.values()):
            if running_job_id == job_id:
                task.cancel()

    async def aclose(self) -> None:
        """Stop looking for items, stop the running ones and put them back to pending."""
        # The loop is asked to stop, not cancelled, so that a claim in progress completes
        # and its items are started, then put back below, instead of left to their leases.
        self._stopping = True
        self._wake_up.set()
        if self._loop_task is not None:
            await asyncio.wait({self._loop_task})
        tasks = [task for _, task in self._running.values()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)
        logger.info("in-process job runner stopped; %d items were put back", len(tasks))

    async def _run(self) -> None:
        while not self._stopping:
            self._wake_up.clear()
            await self._start_claimable_items()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake_up.wait(), self._config.poll_interval_s)

    async def _start_claimable_items(self) -> None:
        free = self._config.concurrency - len(self._running)
        if free <= 0:
            return
        now = datetime.now(UTC)
        try:
            await self._fail_exhausted_items(now)
            claimed = await self._store.claim_next(
                limit=free,
                now=now,
                lease_s=self._config.lease_s,
                max_attempts=self._config.max_attempts,
            )
        except StorageError as exc:
            logger.warning(
                "the job runner could not claim items, and tries again in %.1f s: %s",
                self._config.poll_interval_s,
                exc.message,
            )
            return
        for item in claimed:
            self._start(item)

    async def _fail_exhausted_items(self, now: datetime) -> None:
        # An item runs out of attempts only when a lease expires, so once a lease is often enough.
        if time.monotonic() < self._next_exhaustion_check:
            return
        self._next_exhaustion_check = time.monotonic() + self._config.lease_s
        failed = await self._store.fail_exhausted(now=now, max_attempts=self._config.max_attempts)
        if failed:
            logger.warning("%d job items failed because they ran out of attempts", failed)

    def _start(self, item: ClaimedItem) -> None:
        task: asyncio.Task[object] = asyncio.create_task(
            self._executor.run(item), name=f"microtopic-job-item-{item.item_id}"
        )
        self._running[item.item_id] = (item.job_id, task)
        task.add_done_callback(lambda done: self._on_item_done(item, done))

    def _on_item_done(self, item: ClaimedItem, task: asyncio.Task[object]) -> None:
        self._running.pop(item.item_id, None)
        self._wake_up.set()
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            # The item stays running under its lease, and is run again once it expires.
            logger.error(
                "job item %s: attempt %d failed to record its outcome",
                item.item_id,
                item.attempt,
                exc_info=exc,
            )
