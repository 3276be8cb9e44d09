"""How a pool shares its keys' state with the other processes that serve them.

`PoolSharing` sits between a `KeyPool` and its `RedisPoolState`:

- `admit` sends a call that the pool admitted locally to Redis for admission.
  When Redis rejects it, the reason (a full window, a cooldown, an open
  circuit, a disabled or exhausted key) is copied onto the key's local mirror,
  so the pool chooses again knowing what the other processes did.
- The pool's own observations (a 429's cooldown, an exhausted or revoked key, an
  opened circuit, counters) are written to Redis in the background, in order,
  so that a failing call never waits on them.
- `sync` reads every key's shared state into its mirror; `start` does it every
  `SYNC_INTERVAL_S`, and the stats routes call it before they answer, so every
  process reports the same cooldowns and totals.

Without Redis (`store` None) every method returns at once and the pool works
alone. When Redis cannot be reached, admission falls back to this process's
own windows with one warning, until Redis answers again: generation goes on,
but the processes together may then exceed a key's quota.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from microtopic.errors import RedisUnavailableError
from microtopic.keypool.key import PooledKey
from microtopic.keypool.redis_state import Admission, RedisPoolState, SharedKeyState

logger = logging.getLogger(__name__)

SYNC_INTERVAL_S = 0.5

# The maximum number of writes that may wait for Redis. Past it the oldest are dropped with a
# warning, so that a long outage cannot grow memory without bound.
MAX_PENDING_WRITES = 10_000


@dataclass(frozen=True)
class SharedAdmission:
    """Whether the shared state admitted a call, and when, so its sending is dated on Redis's clock.

    `at_ms` is the admission on Redis's clock, and `requested_at` this process's
    monotonic time when it sent the request. `at_ms` is None without Redis or
    while Redis cannot be reached.
    """

    admitted: bool
    at_ms: float | None = None
    requested_at: float = 0.0

    def sent_at_ms(self, now: float) -> float | None:
        """Return the moment `now` on Redis's clock, or None when the admission has no date.

        It counts from the request, not the reply, so it is never earlier than the true moment.
        """
        if self.at_ms is None:
            return None
        return self.at_ms + (now - self.requested_at) * 1000


ADMITTED_LOCALLY = SharedAdmission(admitted=True)


class PoolSharing:
    """Keeps a pool's key mirrors and Redis in step; a no-op without a store."""

    def __init__(self, store: RedisPoolState | None) -> None:
        self._store = store
        self._restored_seen: dict[str, int] = {}
        self._writes: asyncio.Queue[Callable[[], Awaitable[None]]] | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._detached: set[asyncio.Task[None]] = set()
        self._outage = False

    @property
    def enabled(self) -> bool:
        return self._store is not None

    def new_call_id(self) -> str:
        return uuid.uuid4().hex

    async def admit(
        self, key: PooledKey, call_id: str, tokens: int, *, check_marks: bool = True
    ) -> SharedAdmission:
        """Ask Redis to admit the call; when it does not, update the key's mirror."""
        if self._store is None:
            return ADMITTED_LOCALLY
        requested_at = time.monotonic()
        try:
            admission = await self._store.admit(
                key.name, key.quota, call_id, tokens, check_marks=check_marks
            )
        except RedisUnavailableError as exc:
            self._note_outage(exc)
            return ADMITTED_LOCALLY
        self._note_recovery()
        if not admission.admitted:
            _apply_rejection(key, admission, time.monotonic())
            logger.debug("key %s rejected by the shared state: %s", key.name, admission.verdict)
            return SharedAdmission(admitted=False)
        return SharedAdmission(admitted=True, at_ms=admission.at_ms, requested_at=requested_at)

    def refund(self, key: PooledKey, call_id: str, tokens: int) -> None:
        if self._store is not None:
            self._write(lambda store: store.refund(key.name, call_id, tokens))

    def restamp(self, key: PooledKey, call_id: str, tokens: int, sent_at_ms: float | None) -> None:
        """Date the call from `sent_at_ms` on Redis's clock, or from when Redis gets it if None."""
        if self._store is not None:
            self._write(lambda store: store.restamp(key.name, call_id, tokens, sent_at_ms))

    def cool_down(self, key: PooledKey, wait_s: float) -> None:
        if self._store is not None:
            self._write(lambda store: store.cool_down(key.name, wait_s))

    def open_circuit(self, key: PooledKey, reset_s: float) -> None:
        if self._store is not None:
            self._write(lambda store: store.open_circuit(key.name, reset_s))

    def exhaust(self, key: PooledKey, reason: str, wait_s: float | None) -> None:
        if self._store is not None:
            self._write(lambda store: store.exhaust(key.name, reason, wait_s))

    def disable(self, key: PooledKey, reason: str) -> None:
        if self._store is not None:
            self._write(lambda store: store.disable(key.name, reason))

    def restore(self, key: PooledKey) -> None:
        if self._store is not None:
            self._write(lambda store: store.restore(key.name))

    def record_success(self, key: PooledKey, *, closes_circuit: bool) -> None:
        if self._store is not None:
            self._write(lambda store: store.record_success(key.name, closes_circuit=closes_circuit))

    def record_error(self, key: PooledKey, code: str, reason: str) -> None:
        if self._store is not None:
            self._write(lambda store: store.record_error(key.name, code, reason))

    async def sync(self, keys: list[PooledKey]) -> None:
        """Read every key's shared state into its mirror; skip it while Redis is down."""
        if self._store is None:
            return
        try:
            states = [await self._store.snapshot(key.name, key.quota) for key in keys]
        except RedisUnavailableError as exc:
            self._note_outage(exc)
            return
        self._note_recovery()
        now = time.monotonic()
        for key, state in zip(keys, states, strict=True):
            self._apply_state(key, state, now)

    def start(self, keys: list[PooledKey]) -> None:
        """Start the background writer and the periodic sync; call from the event loop."""
        if self._store is None or self._tasks:
            return
        self._writes = asyncio.Queue()
        self._tasks = [
            asyncio.create_task(self._write_in_order(), name="key-pool-shared-writes"),
            asyncio.create_task(self._sync_every_interval(keys), name="key-pool-shared-sync"),
        ]

    async def aclose(self) -> None:
        """Finish the pending writes, for at most a few seconds, then stop."""
        if self._detached:
            await asyncio.wait(self._detached, timeout=5.0)
        if not self._tasks:
            return
        writes = self._writes
        if writes is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(writes.join(), timeout=5.0)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        self._writes = None

    def _write(self, write: Callable[[RedisPoolState], Awaitable[None]]) -> None:
        store = self._store
        if store is None:
            return
        if self._writes is None:
            # Not started (a test or a one-shot command): write now, in the background.
            task = asyncio.get_running_loop().create_task(self._run_write(lambda: write(store)))
            self._detached.add(task)
            task.add_done_callback(self._detached.discard)
            return
        if self._writes.qsize() >= MAX_PENDING_WRITES:
            self._writes.get_nowait()
            self._writes.task_done()
            logger.warning("dropped a key pool write to Redis: %d are waiting", MAX_PENDING_WRITES)
        self._writes.put_nowait(lambda: write(store))

    async def _write_in_order(self) -> None:
        assert self._writes is not None
        while True:
            write = await self._writes.get()
            try:
                await self._run_write(write)
            finally:
                self._writes.task_done()

    async def _run_write(self, write: Callable[[], Awaitable[None]]) -> None:
        try:
            await write()
        except RedisUnavailableError as exc:
            self._note_outage(exc)
        else:
            self._note_recovery()

    async def _sync_every_interval(self, keys: list[PooledKey]) -> None:
        while True:
            await self.sync(keys)
            await asyncio.sleep(SYNC_INTERVAL_S)

    def _apply_state(self, key: PooledKey, state: SharedKeyState, now: float) -> None:
        seen = self._restored_seen.setdefault(key.name, state.restored)
        if state.restored > seen:
            key.restore()  # enabled by another process, or by a health check it ran
            self._restored_seen[key.name] = state.restored
        if state.disabled_reason is not None:
            key.disabled_reason = state.disabled_reason
        if state.exhausted_reason is not None and state.exhausted_for_s != 0.0:
            key.exhausted_reason = state.exhausted_reason
            key.exhausted_until = (
                None if state.exhausted_for_s is None else now + state.exhausted_for_s
            )
        key.cooldown_until = max(key.cooldown_until, now + state.cooldown_for_s)
        if state.cooldown_for_s > 0:
            key.probing = True  # another process got a 429 on this key
        if state.circuit_open_for_s:
            opened_until = now + state.circuit_open_for_s
            key.breaker.opened_until = max(key.breaker.opened_until or 0.0, opened_until)
        key.shared = state

    def _note_outage(self, exc: RedisUnavailableError) -> None:
        if not self._outage:
            self._outage = True
            logger.warning(
                "%s Until Redis is back, each process admits calls by its own windows only.",
                exc.message,
            )

    def _note_recovery(self) -> None:
        if self._outage:
            self._outage = False
            logger.info("Redis is reachable again; the key pool's state is shared once more.")


def _apply_rejection(key: PooledKey, admission: Admission, now: float) -> None:
    wait_s = admission.wait_s
    if admission.verdict == "quota" and wait_s is not None:
        key.shared_ready_at = max(key.shared_ready_at, now + wait_s)
    elif admission.verdict == "cooling" and wait_s is not None:
        key.cooldown_until = max(key.cooldown_until, now + wait_s)
        key.probing = True
    elif admission.verdict == "circuit_open" and wait_s is not None:
        key.breaker.opened_until = max(key.breaker.opened_until or 0.0, now + wait_s)
    elif admission.verdict == "exhausted":
        key.exhausted_reason = admission.reason or "out of quota (seen by another process)"
        key.exhausted_until = None if wait_s is None else now + wait_s
    elif admission.verdict == "disabled":
        key.disabled_reason = admission.reason or "disabled by another process"
