"""The content cache: generated topics by request, with single flight within and across processes.

A request goes through three steps before it is generated:

1. its entry is read; a hit is returned at once;
2. in this process, an identical request already generating makes it a follower
   (`SingleFlight`), so a process runs one generation per key at a time;
3. with a shared backend (Redis), the leader of this process takes the key's
   lock. When another process has taken it, the leader waits for that process's
   entry, polling every `poll_interval_s` until its deadline. When the lock goes
   away without an entry (that generation failed, or its process died and the
   lock expired), the leader takes the lock and generates itself.

Only a generation that succeeded is stored. A failed, filtered or truncated one
raises instead of returning a result, so it is never cached. A request marked
`is_retry` skips the steps above: it is always generated, and its result
replaces the entry.

The cache never fails a generation. When the backend fails, the request goes on
without it, and `BackendHealth` logs one warning per outage.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Literal, TypeVar

from microtopic.cache.backend import CacheBackend, LockBackend
from microtopic.cache.entry import CachedTopic
from microtopic.cache.flight import SingleFlight
from microtopic.cache.health import BackendHealth
from microtopic.cache.key import cache_key
from microtopic.domain import GenerationRequest
from microtopic.errors import DeadlineExceededError, RedisUnavailableError
from microtopic.observability.tracing import SpanKind, span

logger = logging.getLogger(__name__)

R = TypeVar("R")
T = TypeVar("T")

POLL_INTERVAL_S = 0.1


class _Unavailable(enum.Enum):
    BACKEND = enum.auto()


# Returned in place of a value when the backend failed or is paused.
_UNAVAILABLE = _Unavailable.BACKEND
_UnavailableType = Literal[_Unavailable.BACKEND]


class TopicCache:
    """Cached topics in `backend`, keyed by request, prompt version and models.

    `locks` is the backend again when it is shared by several processes (Redis),
    else None. A leader holds its lock for `lock_ttl_s` and renews it every third
    of that while it generates, so a lock outlives a slow generation, and the lock
    of a process that died expires `lock_ttl_s` later at most.
    """

    def __init__(
        self,
        backend: CacheBackend,
        *,
        ttl_s: float,
        prompt_version: str,
        models: list[str],
        locks: LockBackend | None = None,
        lock_ttl_s: float,
        deadline_s: float | None = None,
        poll_interval_s: float = POLL_INTERVAL_S,
        health: BackendHealth | None = None,
    ) -> None:
        self.backend = backend
        self._ttl_s = ttl_s
        self._prompt_version = prompt_version
        self._models = models
        self._locks = locks
        self._lock_ttl_s = lock_ttl_s
        self._deadline_s = deadline_s
        self._poll_interval_s = poll_interval_s
        self.health = health or BackendHealth(backend.name)
        self._flight: SingleFlight[CachedTopic] = SingleFlight(deadline_s=deadline_s)

    def key_for(self, request: GenerationRequest) -> str:
        """Return the cache key of `request` (see `microtopic.cache.key`)."""
        return cache_key(request, prompt_version=self._prompt_version, models=self._models)

    async def get_or_generate(
        self,
        request: GenerationRequest,
        generate: Callable[[], Awaitable[R]],
        to_entry: Callable[[R], CachedTopic],
        *,
        deadline: float | None = None,
    ) -> R | CachedTopic:
        """Return the cached topic of `request`, or the result of `generate` when it ran here.

        `to_entry` turns a result into the entry to store. `deadline` (monotonic
        clock) bounds the wait for another request's generation.
        """
        key = self.key_for(request)
        if request.is_retry:
            return await self._generate_and_store(key, generate, to_entry)

        entry = await self.read(key)
        if entry is not None:
            return entry

        def share(served: R | CachedTopic) -> CachedTopic:
            return served if isinstance(served, CachedTopic) else to_entry(served)

        return await self._flight.run(
            key, lambda: self._lead(key, generate, to_entry, deadline), share, deadline=deadline
        )

    async def read(self, key: str) -> CachedTopic | None:
        """Return the valid entry of `key`, or None for a miss or an unavailable backend."""
        with span("cache lookup", SpanKind.CACHE, {"backend": self.backend.name}) as lookup:
            text = await self._call(lambda: self.backend.get(key))
            lookup.set("hit", isinstance(text, str))
        if text is None or text is _UNAVAILABLE:
            return None
        entry = CachedTopic.from_json(text)
        if entry is None:
            logger.warning("The cached topic %s no longer validates; it is generated again.", key)
        return entry

    async def aclose(self) -> None:
        """Close the backend's connections; a failure is logged, not raised."""
        try:
            await self.backend.aclose()
        except RedisUnavailableError as exc:
            logger.warning("Could not close the content cache cleanly: %s", exc.message)

    async def _lead(
        self,
        key: str,
        generate: Callable[[], Awaitable[R]],
        to_entry: Callable[[R], CachedTopic],
        deadline: float | None,
    ) -> R | CachedTopic:
        # Read again: a leader that finished while this request read the first time
        # has stored its entry and ended its flight.
        entry = await self.read(key)
        if entry is not None:
            return entry

        token = None
        if self._locks is not None:
            won = await self._lock_or_follow(self._locks, key, deadline)
            if isinstance(won, CachedTopic):
                return won
            token = won

        renewer = None
        if self._locks is not None and token is not None:
            renewer = asyncio.create_task(self._renew_lock(self._locks, key, token))
        try:
            return await self._generate_and_store(key, generate, to_entry)
        finally:
            if renewer is not None:
                renewer.cancel()
            if self._locks is not None and token is not None:
                await self._release(self._locks, key, token)

    async def _renew_lock(self, locks: LockBackend, key: str, token: str) -> None:
        """Keep the lock of `key` while this leader generates, until cancelled."""
        while True:
            await asyncio.sleep(self._lock_ttl_s / 3)
            renewed = await self._call(lambda: locks.renew_lock(key, token, ttl_s=self._lock_ttl_s))
            if renewed is False:
                # Another process took the key after this one stalled past the lock's TTL;
                # both generate, and the later entry replaces the earlier one.
                logger.warning("cache %s: the generation lock was lost while generating", key)
                return

    async def _generate_and_store(
        self, key: str, generate: Callable[[], Awaitable[R]], to_entry: Callable[[R], CachedTopic]
    ) -> R:
        result = await generate()
        entry = to_entry(result)
        await self._call(lambda: self.backend.set(key, entry.to_json(), ttl_s=self._ttl_s))
        return result

    async def _lock_or_follow(
        self, locks: LockBackend, key: str, deadline: float | None
    ) -> str | CachedTopic | None:
        """Return the lock's token, another process's entry, or None to generate unlocked."""
        while True:
            token = await self._call(lambda: locks.acquire_lock(key, ttl_s=self._lock_ttl_s))
            if token is _UNAVAILABLE:
                return None
            if token is not None:
                return await self._entry_or_token(locks, key, token)

            with span("wait for another process", SpanKind.CACHE):
                entry = await self._wait_for_other_process(locks, key, deadline)
            if entry is _UNAVAILABLE:
                return None
            if entry is not None:
                return entry
            logger.debug("cache %s: the other leader stopped without an entry; taking over", key)

    async def _entry_or_token(self, locks: LockBackend, key: str, token: str) -> str | CachedTopic:
        # A leader elsewhere may have stored its entry and released the lock just before.
        entry = await self.read(key)
        if entry is None:
            return token
        await self._release(locks, key, token)
        return entry

    async def _wait_for_other_process(
        self, locks: LockBackend, key: str, deadline: float | None
    ) -> CachedTopic | _UnavailableType | None:
        """Return the entry once stored, or None once the lock is gone without one."""
        while True:
            peeked = await self._call(lambda: locks.peek(key))
            if peeked is _UNAVAILABLE:
                return _UNAVAILABLE
            text, locked = peeked
            entry = None if text is None else CachedTopic.from_json(text)
            if entry is not None or not locked:
                return entry

            remaining_s = None if deadline is None else deadline - time.monotonic()
            if remaining_s is not None and remaining_s <= 0:
                raise self._deadline_error()
            interval_s = self._poll_interval_s
            await asyncio.sleep(interval_s if remaining_s is None else min(interval_s, remaining_s))

    async def _release(self, locks: LockBackend, key: str, token: str) -> None:
        # Shielded, so that a cancelled leader still frees the key for the others at once
        # instead of after the lock's TTL.
        await asyncio.shield(self._call(lambda: locks.release_lock(key, token)))

    async def _call(self, operation: Callable[[], Awaitable[T]]) -> T | _UnavailableType:
        if not self.health.available:
            return _UNAVAILABLE
        try:
            value = await operation()
        except RedisUnavailableError as exc:
            self.health.record_failure(exc)
            return _UNAVAILABLE
        self.health.record_success()
        return value

    def _deadline_error(self) -> DeadlineExceededError:
        return DeadlineExceededError(
            "The request's deadline passed while another process generated the same "
            "topic. Retry the request, or raise gateway.request_deadline_s.",
            deadline_s=self._deadline_s or 0.0,
        )
