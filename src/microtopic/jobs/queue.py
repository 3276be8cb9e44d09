"""The arq queue in Redis: one arq job per job item, run by `microtopic worker` processes.

An arq job's id is derived from its item's id and the number of claims the item has
had, so queueing the same item twice is a no-op while the first arq job waits or
runs: arq (0.28) skips `enqueue_job` when a job with that id is queued, running, or
kept as a result. An item whose process died is queued again under the next
number, so that a new arq job runs it at once. arq itself would run the dead job
again only after its in-progress key expires, which takes the longest job timeout
plus 10 s.

Redis errors leave this module as `QueueUnavailableError`, with the message
that `microtopic.redis_client` writes for them.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from arq.connections import ArqRedis
from arq.jobs import Job, JobStatus
from redis.asyncio import ConnectionPool
from redis.exceptions import RedisError

from microtopic.config import Settings
from microtopic.errors import QueueUnavailableError
from microtopic.redis_client import describe_redis_url, translate_redis_error
from microtopic.storage import PendingItem

logger = logging.getLogger(__name__)

RUN_ITEM_FUNCTION = "run_job_item"
"""The name of the arq function that runs one job item."""

REDIS_CONNECT_TIMEOUT_S = 5.0
"""How long a connection to Redis may take, so that an unreachable host fails fast."""


def queue_name(namespace: str) -> str:
    """Return the name of the arq queue (a Redis sorted set) of a Redis namespace."""
    return f"{namespace}:queue"


def arq_job_id(namespace: str, item: PendingItem, sweep_round: int | None = None) -> str:
    """Return the arq job id of the item's next attempt.

    A sweep passes its round. The arq job that the item was queued under may keep
    arq's in-progress mark after its worker was stopped or killed, even before the
    job claimed the item. A new id per round keeps the item from waiting on it.
    """
    base = f"{namespace}:item:{item.item_id}:{item.attempts}"
    if sweep_round is None:
        return base
    return f"{base}:sweep-{sweep_round}"


@contextmanager
def redis_errors(url: str, action: str) -> Iterator[None]:
    """Raise `QueueUnavailableError` in place of any redis or network error in the block.

    `action` completes the sentence "Could not ...". The message is written by
    `microtopic.redis_client`, the one place that translates Redis errors.
    """
    try:
        yield
    except (RedisError, OSError) as exc:
        backend = describe_redis_url(url)
        general = translate_redis_error(exc, backend=backend, action=action)
        raise QueueUnavailableError(general.message, backend=backend) from exc


class ArqQueue:
    """Queues job items as arq jobs for the workers."""

    def __init__(self, redis: ArqRedis, *, url: str, namespace: str) -> None:
        self.redis = redis
        self.namespace = namespace
        self.queue_name = queue_name(namespace)
        self._url = url

    @classmethod
    def from_settings(cls, settings: Settings) -> ArqQueue:
        """Return the queue of `settings.redis_url`; no connection is made until it is used."""
        if settings.redis_url is None:
            raise ValueError("the arq queue needs settings.redis_url")
        url = settings.redis_url.get_secret_value()
        redis = ArqRedis(
            pool_or_conn=ConnectionPool.from_url(
                url, socket_connect_timeout=REDIS_CONNECT_TIMEOUT_S
            ),
            default_queue_name=queue_name(settings.redis_namespace),
        )
        return cls(redis, url=url, namespace=settings.redis_namespace)

    @property
    def display_url(self) -> str:
        return describe_redis_url(self._url)

    async def enqueue(self, items: Sequence[PendingItem], *, sweep_round: int | None = None) -> int:
        """Queue an arq job for each item's next attempt; return how many were new.

        An item with `not_before` is run by the first worker free at that time. A
        sweep passes its round: an item whose job still waits in the queue is left
        to it, and the others get a job under a new id.
        """
        queued = 0
        with redis_errors(self._url, f"queue {len(items)} job items"):
            for item in items:
                if sweep_round is not None and await self._waits_in_queue(item):
                    continue
                job = await self.redis.enqueue_job(
                    RUN_ITEM_FUNCTION,
                    item.item_id,
                    _job_id=arq_job_id(self.namespace, item, sweep_round),
                    _defer_until=item.not_before,
                )
                queued += job is not None
        return queued

    async def _waits_in_queue(self, item: PendingItem) -> bool:
        # A job that no worker has started yet runs the item in time; another one
        # would only find it claimed.
        job = Job(arq_job_id(self.namespace, item), self.redis, _queue_name=self.queue_name)
        return await job.status() in (JobStatus.queued, JobStatus.deferred)

    async def dispatch(self, items: Sequence[PendingItem]) -> None:
        """Queue the items; when Redis fails, leave them to the workers' sweep."""
        try:
            await self.enqueue(items)
        except QueueUnavailableError as exc:
            logger.warning(
                "%s The %d items stay pending in the database; the workers queue them "
                "once Redis is back.",
                exc.message,
                len(items),
            )

    async def cancel(self, job_id: str) -> None:
        """Do nothing: workers stop a cancelled item when they next renew its lease."""

    async def check(self) -> None:
        """Ping Redis; raise `QueueUnavailableError` when the ping fails."""
        with redis_errors(self._url, "reach the job queue"):
            await self.redis.ping()

    async def aclose(self) -> None:
        """Close the connections to Redis."""
        await self.redis.aclose(close_connection_pool=True)
