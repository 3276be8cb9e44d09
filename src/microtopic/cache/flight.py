"""Single flight in one process: identical requests that overlap share one generation.

The first caller for a key is the leader and runs the work. Callers that come
while it runs are followers and wait for what the leader shares:

- when the leader succeeds, every follower gets the shared value;
- when the leader fails, every follower waiting then fails with the same error,
  because an identical request would meet the same keys, quota and model. The
  failure is not remembered: the flight ends with the leader, and the next caller
  leads a new one;
- when the leader is cancelled (its client disconnected), its followers still
  want the topic, so one of them becomes the leader and runs its own work.

A follower that is cancelled, or whose deadline passes, stops waiting; the
leader goes on for the others.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

from microtopic.errors import DeadlineExceededError
from microtopic.observability.tracing import SpanKind, span

logger = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")


class _LeaderCancelled(Exception):
    """Shared with the followers when the leader stops without a result or an error."""


class SingleFlight(Generic[T]):
    """Runs one leader per key at a time and gives its followers the value it shares.

    `deadline_s` is the request deadline that a follower's `deadline` comes from,
    named in the error when that deadline passes.
    """

    def __init__(self, *, deadline_s: float | None = None) -> None:
        self._deadline_s = deadline_s
        self._flights: dict[str, asyncio.Future[T]] = {}

    def __len__(self) -> int:
        """Return the number of keys whose leader is running."""
        return len(self._flights)

    async def run(
        self,
        key: str,
        lead: Callable[[], Awaitable[R]],
        share: Callable[[R], T],
        *,
        deadline: float | None = None,
    ) -> R | T:
        """Return what `lead` returns as the leader, or what the leader shared as a follower.

        `share` turns the leader's result into the value its followers get.
        `deadline` (monotonic clock) bounds a follower's wait; when it passes,
        `DeadlineExceededError` is raised.
        """
        while (flight := self._flights.get(key)) is not None:
            try:
                with span("wait for identical request", SpanKind.CACHE):
                    return await self._follow(flight, deadline)
            except _LeaderCancelled:
                logger.debug("single flight %s: the leader was cancelled; taking over", key[:12])
        return await self._lead(key, lead, share)

    async def _lead(self, key: str, lead: Callable[[], Awaitable[R]], share: Callable[[R], T]) -> R:
        flight: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._flights[key] = flight
        try:
            result = await lead()
            shared = share(result)
        except Exception as exc:
            self._close(key, flight)
            _set_error(flight, exc)
            raise
        except BaseException:
            # Cancellation, or the process stopping: nothing to share, so a follower leads.
            self._close(key, flight)
            _set_error(flight, _LeaderCancelled())
            raise

        self._close(key, flight)
        flight.set_result(shared)
        return result

    async def _follow(self, flight: asyncio.Future[T], deadline: float | None) -> T:
        remaining_s = None if deadline is None else deadline - time.monotonic()
        try:
            async with asyncio.timeout(remaining_s):
                # Shielded: cancelling a follower must not cancel the future that the
                # leader resolves for every follower.
                return await asyncio.shield(flight)
        except TimeoutError:
            if flight.done():
                raise  # The leader's own error.
            raise DeadlineExceededError(
                "The request's deadline passed while it waited for an identical request "
                "to finish generating. Retry the request, or raise "
                "gateway.request_deadline_s.",
                deadline_s=self._deadline_s or 0.0,
            ) from None

    def _close(self, key: str, flight: asyncio.Future[T]) -> None:
        # From here on, a new caller of `run` leads a new flight.
        if self._flights.get(key) is flight:
            del self._flights[key]


def _set_error(flight: asyncio.Future[T], error: BaseException) -> None:
    flight.set_exception(error)
    # Marks the error as retrieved, so asyncio does not log it when no follower came.
    flight.exception()
