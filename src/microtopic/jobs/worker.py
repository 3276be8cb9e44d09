"""The arq worker: runs the job items that the arq queue holds, with our settings.

Each arq job runs one item through `ItemExecutor.claim_and_run`, which first claims
the item in the database. An arq job for an item that is finished, or held by a
live attempt elsewhere, therefore does nothing, and neither arq's own retries nor
duplicate arq jobs run a finished item again.

The database, not Redis, is the record of what is left to do. Every half lease,
each worker sweeps it: it fails the items out of attempts, and queues the items
that may have no arq job, namely those whose lease expired (their process died)
and those pending for longer than a lease. So after `kill -9`, the items of the
dead worker run again within one and a half leases, whatever arq's own timeouts.

On SIGINT or SIGTERM, arq cancels the running jobs. Each puts its item back to
pending, and arq leaves its job queued for the next worker.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from typing import Any

from arq.worker import Worker, func

from microtopic.config import JobsConfig, Settings
from microtopic.errors import ConfigError, QueueUnavailableError, StorageError
from microtopic.jobs.queue import RUN_ITEM_FUNCTION, ArqQueue
from microtopic.runtime import Runtime
from microtopic.storage import JobStore

logger = logging.getLogger(__name__)

# Items that one sweep queues at most; the next sweep takes the rest.
SWEEP_LIMIT = 100
# Time an arq job may take beyond the request deadline and a lease, for its database writes.
ITEM_TIMEOUT_MARGIN_S = 60.0

_RUNTIME = "microtopic_runtime"
_SWEEPER = "microtopic_sweeper"


async def run_job_item(ctx: dict[str, Any], item_id: str) -> str:
    """Claim and run one job item; return how the attempt ended (arq's job function)."""
    runtime: Runtime = ctx[_RUNTIME]
    outcome = await runtime.executor.claim_and_run(item_id)
    return outcome.value


class Sweeper:
    """Queues, every half lease, the items that may have no arq job to run them."""

    def __init__(self, store: JobStore, queue: ArqQueue, config: JobsConfig) -> None:
        self._store = store
        self._queue = queue
        self._config = config
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="microtopic-job-sweeper")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait({self._task})

    async def sweep(self) -> int:
        """Fail the items out of attempts and queue the stranded ones; return how many."""
        now = datetime.now(UTC)
        failed = await self._store.fail_exhausted(now=now, max_attempts=self._config.max_attempts)
        if failed:
            logger.warning("%d job items failed because they ran out of attempts", failed)

        stranded = await self._store.find_stranded(
            now=now,
            lease_s=self._config.lease_s,
            max_attempts=self._config.max_attempts,
            limit=SWEEP_LIMIT,
        )
        sweep_round = int(now.timestamp() // self._config.lease_s)
        queued = await self._queue.enqueue(stranded, sweep_round=sweep_round) if stranded else 0
        if queued:
            logger.info("queued %d job items that had no arq job, or lost their worker", queued)
        return queued

    async def _run(self) -> None:
        interval_s = self._config.lease_s / 2
        while True:
            try:
                await self.sweep()
            except (StorageError, QueueUnavailableError) as exc:
                logger.warning(
                    "the sweep failed, and runs again in %.1f s: %s", interval_s, exc.message
                )
            await asyncio.sleep(interval_s)


def worker_settings(runtime: Runtime) -> dict[str, Any]:
    """Return the keyword arguments of arq's `Worker` that run items with `runtime`."""
    queue = _queue_of(runtime)
    settings = runtime.settings
    deadline_s = settings.effective_gateway().request_deadline_s
    return {
        "functions": [
            func(
                run_job_item,
                name=RUN_ITEM_FUNCTION,
                timeout=deadline_s + settings.jobs.lease_s + ITEM_TIMEOUT_MARGIN_S,
            )
        ],
        "queue_name": queue.queue_name,
        "redis_pool": queue.redis,
        "max_jobs": settings.jobs.concurrency,
        # Outcomes live in the database. arq keeps no result, so an arq job id can be
        # queued again as soon as its job has ended.
        "keep_result": 0,
        "health_check_key": f"{queue.queue_name}:health-check",
        "on_startup": _start_sweeper,
        "on_shutdown": _stop_sweeper,
        "ctx": {_RUNTIME: runtime},
    }


async def run_worker(settings: Settings) -> None:
    """Run an arq worker until SIGINT or SIGTERM; the running items go back to pending.

    Raises `QueueUnavailableError` when Redis cannot be reached at start-up.
    """
    runtime = await Runtime.start(settings)
    try:
        queue = _queue_of(runtime)
        await queue.check()
        worker = Worker(**worker_settings(runtime))
        logger.info(
            "worker starting on queue %s at %s, running up to %d items at once",
            queue.queue_name,
            queue.display_url,
            settings.jobs.concurrency,
        )
        try:
            await worker.async_run()
        except asyncio.CancelledError:
            # arq's signal handler cancels its main task; only our own cancellation propagates.
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise
            logger.info("the worker received a signal and stops")
        finally:
            # Waits for the cancelled jobs, which put their items back, then stops the sweeper.
            await worker.close()
    finally:
        await runtime.aclose()


def _queue_of(runtime: Runtime) -> ArqQueue:
    if runtime.queue is None:
        raise ConfigError(
            "microtopic worker runs the items of the arq queue, but jobs.runner is not arq. "
            "Set jobs.runner: arq and redis_url in the config."
        )
    return runtime.queue


async def _start_sweeper(ctx: dict[str, Any]) -> None:
    runtime: Runtime = ctx[_RUNTIME]
    sweeper = Sweeper(runtime.job_store, _queue_of(runtime), runtime.settings.jobs)
    sweeper.start()
    ctx[_SWEEPER] = sweeper


async def _stop_sweeper(ctx: dict[str, Any]) -> None:
    sweeper: Sweeper | None = ctx.get(_SWEEPER)
    if sweeper is not None:
        await sweeper.stop()
