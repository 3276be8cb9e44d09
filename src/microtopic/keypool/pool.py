"""The key pool: admits each call to a key that has room, or queues it until one does.

A call is admitted only to a key that can take it now: in rotation, not
exhausted, not cooling down, its circuit closed (or half-open for one probe), a
free concurrency slot, and room in its request and token windows for this call.
It is charged at admission, before it is sent, so the pool never sends what a
known quota would refuse. The pool also caps the calls in flight across all keys
(`max_concurrent_requests`).

When nothing can take a call, it waits in one queue of at most
`max_queue_size` callers, ordered by the deadline of the request it belongs to
(first come, first served among equal deadlines). The calls of a generation
share its deadline, so under overload the generations that started first get
their next calls first and finish, rather than every generation advancing a
little and all of them missing their deadlines. Whenever a slot frees, a state
changes or a window rolls on (a timer set for the earliest such moment), the
queue is served in order, skipping callers that cannot use the free key. A
caller fails at once when the queue is full, or when no key can return before
its deadline.

Everything here runs on the event loop without awaiting, so it needs no lock,
and a cancelled caller gives back its queue place and any lease it was handed.

With shared state (`PoolSharing` over Redis), a call admitted here must then
be admitted by Redis too, against the windows and marks of every process. When
Redis rejects it, the key's mirror records why, and the pool admits the call again.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from microtopic.config import GatewayConfig
from microtopic.errors import (
    CallExceedsQuotaError,
    NoKeyAvailableError,
    NotFoundError,
    ServiceAtCapacityError,
    UpstreamAuthError,
    UpstreamBadRequestError,
    UpstreamError,
    UpstreamRateLimitError,
)
from microtopic.keypool.key import KeyState, PooledKey
from microtopic.keypool.quota import Charge
from microtopic.keypool.selection import Selector
from microtopic.keypool.sharing import ADMITTED_LOCALLY, PoolSharing, SharedAdmission

logger = logging.getLogger(__name__)


@dataclass(eq=False)
class Demand:
    """A caller's need: a key with room for its tokens, before its deadline.

    `tokens_for` returns the call's admission tokens on a given key (the payload
    differs a little between structured-output modes). Keys in `avoid` (the one
    that just failed) are taken only when no other can, and not before `avoid_until`.
    The pool adds to `waits` the start and end (monotonic clock) of each wait in its
    queue, which the gateway's trace shows.
    """

    tokens_for: Callable[[PooledKey], int]
    deadline: float
    avoid: frozenset[str] = frozenset()
    avoid_until: float = 0.0
    waits: list[tuple[float, float]] = field(default_factory=list)


@dataclass(eq=False)
class Lease:
    """A key admitted for one call. Give it back with `KeyPool.release`."""

    key: PooledKey
    charge: Charge
    call_id: str = ""
    shared: bool = False  # charged in the shared state too
    admission: SharedAdmission = ADMITTED_LOCALLY
    sent: bool = False
    settled: bool = False
    released: bool = False


@dataclass(frozen=True)
class PoolCapacity:
    """Calls in flight against the cap, and callers waiting for a key."""

    max_concurrent_requests: int
    active_requests: int
    available_slots: int
    queued_requests: int
    max_queue_size: int


@dataclass(eq=False)
class _Waiter:
    demand: Demand
    future: asyncio.Future[Lease] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class KeyPool:
    """The keys the gateway may use, and the queue of calls waiting for one."""

    def __init__(
        self,
        keys: list[PooledKey],
        config: GatewayConfig | None = None,
        sharing: PoolSharing | None = None,
    ) -> None:
        if not keys:
            raise ValueError("a key pool needs at least one key")
        self._config = config or GatewayConfig()
        for key in keys:
            key.configure(self._config)
        self._keys = keys
        self._by_name = {key.name: key for key in keys}
        self._selector = Selector(self._config.selection, keys)
        self._active = 0
        self._waiters: list[_Waiter] = []
        self._timer: asyncio.TimerHandle | None = None
        self._sharing = sharing or PoolSharing(None)

    @property
    def keys(self) -> list[PooledKey]:
        return list(self._keys)

    @property
    def config(self) -> GatewayConfig:
        return self._config

    def get(self, name: str) -> PooledKey:
        """Return the key called `name`, or raise `NotFoundError`."""
        try:
            return self._by_name[name]
        except KeyError:
            raise NotFoundError(
                f"No key is named {name!r}; `microtopic keys` lists them."
            ) from None

    def capacity(self) -> PoolCapacity:
        limit = self._config.max_concurrent_requests
        return PoolCapacity(
            max_concurrent_requests=limit,
            active_requests=self._active,
            available_slots=max(0, limit - self._active),
            queued_requests=len(self._waiters),
            max_queue_size=self._config.max_queue_size,
        )

    @property
    def shares_state(self) -> bool:
        return self._sharing.enabled

    def start(self) -> None:
        """Start sharing state with the other processes, when a store is configured."""
        self._sharing.start(self._keys)

    async def aclose(self) -> None:
        await self._sharing.aclose()

    async def sync(self) -> None:
        """Read the other processes' view of every key into this pool, when shared."""
        await self._sharing.sync(self._keys)
        self._dispatch(check_deadlines=False)

    async def acquire(self, demand: Demand) -> Lease:
        """Return a lease on the best key for `demand`, waiting in the queue if need be.

        Raises `NoKeyAvailableError` at once when no key can serve before the
        deadline, and `ServiceAtCapacityError` at once when the queue is full or
        when the deadline passes while waiting behind other calls.
        """
        while True:
            lease = await self._acquire_here(demand)
            try:
                admission = await self._sharing.admit(lease.key, lease.call_id, lease.charge.tokens)
            except BaseException:
                self.release(lease)
                raise
            if admission.admitted:
                lease.shared = self._sharing.enabled
                lease.admission = admission
                return lease
            lease.key.usage_count -= 1  # Redis rejected it, so no call was made.
            self.release(lease)

    async def lease_now(self, key: PooledKey, tokens: int) -> Lease | None:
        """Admit a call of `tokens` to `key` now, or return None; for health checks.

        A check must reach a key that is out of rotation, so only the key's windows,
        its concurrency slots and the pool's cap apply, and nothing waits.
        """
        now = time.monotonic()
        if self._active >= self._config.max_concurrent_requests or not key.has_free_slot:
            return None
        if not key.quota.fits(tokens, now):
            return None
        lease = self._lease(key, tokens, now)
        try:
            admission = await self._sharing.admit(key, lease.call_id, tokens, check_marks=False)
        except BaseException:
            self.release(lease)
            raise
        if not admission.admitted:
            key.usage_count -= 1
            self.release(lease)
            return None
        lease.shared = self._sharing.enabled
        lease.admission = admission
        return lease

    async def _acquire_here(self, demand: Demand) -> Lease:
        now = time.monotonic()
        self._raise_if_unserviceable(demand, now)
        if not self._waiters and self._active < self._config.max_concurrent_requests:
            lease = self._try_lease(demand, now)
            if lease is not None:
                return lease
        if len(self._waiters) >= self._config.max_queue_size:
            raise self._queue_full_error(demand, now)
        return await self._wait(_Waiter(demand))

    def mark_sent(self, lease: Lease) -> None:
        """Note that the call is going out: its charge stays, dated from now."""
        lease.sent = True
        now = time.monotonic()
        lease.charge = lease.key.quota.restamp(lease.charge, now)
        if lease.shared:
            sent_at_ms = lease.admission.sent_at_ms(now)
            self._sharing.restamp(lease.key, lease.call_id, lease.charge.tokens, sent_at_ms)

    def succeeded(self, lease: Lease, headers: dict[str, str]) -> None:
        """Record a served call and learn from the provider's rate-limit headers."""
        lease.settled = True
        was_open = lease.key.breaker.opened_until is not None
        lease.key.breaker.on_success()
        lease.key.probing = False
        self._sharing.record_success(lease.key, closes_circuit=was_open)
        lease.key.quota.relax()
        if not lease.shared:
            # The shared windows already count every process's calls, so the other
            # processes' calls would look like hidden use here and be counted twice.
            lease.key.quota.learn(headers, lease.charge, time.monotonic())

    def failed(self, lease: Lease, error: UpstreamError) -> None:
        """Record a failed call and take the key out as its error requires."""
        lease.settled = True
        key = lease.key
        if not error.key_fault:
            key.breaker.on_success()  # The key responded, so the request was the problem.
            return
        key.error_count += 1
        key.errors_by_class[error.code] += 1
        key.last_error = error.reason
        self._sharing.record_error(key, error.code, error.reason)
        self._apply_fault(key, error, time.monotonic())
        self._dispatch(check_deadlines=True)

    def record_check_failure(self, key: PooledKey, error: UpstreamError) -> None:
        """Apply a failed health check to the key, as a failed call would be."""
        if error.key_fault:
            key.errors_by_class[error.code] += 1
            self._apply_fault(key, error, time.monotonic())
            self._dispatch(check_deadlines=True)

    def release(self, lease: Lease) -> None:
        """Give back the lease's slot; refund its charge if the call was never sent."""
        if lease.released:
            return
        lease.released = True
        key = lease.key
        key.active_calls -= 1
        self._active -= 1
        if not lease.sent:
            key.quota.refund(lease.charge)
            if lease.shared:
                self._sharing.refund(key, lease.call_id, lease.charge.tokens)
        if not lease.settled:
            key.breaker.on_abandon()
        self._dispatch(check_deadlines=False)

    def disable(self, name: str, reason: str) -> PooledKey:
        """Take a key out of rotation until it is enabled or passes a health check."""
        key = self.get(name)
        if key.disabled_reason is None:
            logger.warning("key %s disabled: %s", key.name, reason, extra={"key_name": key.name})
        key.disabled_reason = reason
        self._sharing.disable(key, reason)
        self._dispatch(check_deadlines=True)
        return key

    def enable(self, name: str) -> PooledKey:
        """Put a key back into rotation, clearing cooldowns, exhaustion and its breaker."""
        key = self.get(name)
        key.restore()
        self._sharing.restore(key)
        logger.info("key %s enabled", name, extra={"key_name": name})
        self._dispatch(check_deadlines=False)
        return key

    def cooldown_remaining_s(self, key: PooledKey) -> float:
        return max(0.0, key.cooldown_until - time.monotonic())

    async def _wait(self, waiter: _Waiter) -> Lease:
        started = time.monotonic()
        bisect.insort_right(self._waiters, waiter, key=_deadline_of)
        self._dispatch(check_deadlines=False)
        try:
            async with asyncio.timeout_at(waiter.demand.deadline):
                return await waiter.future
        except BaseException as exc:
            future = waiter.future
            if future.done() and not future.cancelled() and future.exception() is None:
                self.release(future.result())  # handed a lease just as it gave up
            if isinstance(exc, TimeoutError):
                raise self._deadline_error(waiter.demand) from None
            raise
        finally:
            waiter.demand.waits.append((started, time.monotonic()))
            if waiter in self._waiters:
                self._waiters.remove(waiter)

    def _dispatch(self, *, check_deadlines: bool) -> None:
        now = time.monotonic()
        if not check_deadlines and not any(key.can_take(now) for key in self._keys):
            self._arm_timer(now)
            return
        # A call that avoids no key and did not fit means no later call as large fits.
        smallest_unfit: int | None = None
        for waiter in list(self._waiters):
            if waiter.future.done():
                self._waiters.remove(waiter)
                continue
            if self._active >= self._config.max_concurrent_requests and not check_deadlines:
                break
            size = None if waiter.demand.avoid else waiter.demand.tokens_for(self._keys[0])
            lease = None
            fits_maybe = size is None or smallest_unfit is None or size < smallest_unfit
            if fits_maybe and self._active < self._config.max_concurrent_requests:
                lease = self._try_lease(waiter.demand, now)
            if lease is not None:
                waiter.future.set_result(lease)
                self._waiters.remove(waiter)
                continue
            if size is not None and fits_maybe:
                smallest_unfit = size
            if check_deadlines:
                self._fail_if_unserviceable(waiter, now)
        self._arm_timer(now)

    def _fail_if_unserviceable(self, waiter: _Waiter, now: float) -> None:
        try:
            self._raise_if_unserviceable(waiter.demand, now)
        except (NoKeyAvailableError, CallExceedsQuotaError) as exc:
            waiter.future.set_exception(exc)
            self._waiters.remove(waiter)

    def _try_lease(self, demand: Demand, now: float) -> Lease | None:
        candidates = [
            key
            for key in self._keys
            if key.can_take(now) and key.quota.fits(demand.tokens_for(key), now)
        ]
        preferred = [key for key in candidates if key.name not in demand.avoid]
        if not preferred and now >= demand.avoid_until:
            preferred = candidates
        if not preferred:
            return None
        key = self._selector.choose(preferred, demand.tokens_for, now)
        return self._lease(key, demand.tokens_for(key), now)

    def _lease(self, key: PooledKey, tokens: int, now: float) -> Lease:
        key.active_calls += 1
        key.usage_count += 1
        key.last_used = datetime.now(UTC)
        key.breaker.on_admit(now)
        self._active += 1
        charge = key.quota.charge(tokens, now)
        return Lease(key=key, charge=charge, call_id=self._sharing.new_call_id())

    def _earliest_start(self, demand: Demand, now: float) -> float | None:
        """Return when some key could first take `demand`, ignoring slots; None if never."""
        starts = []
        for key in self._keys:
            ready = key.ready_at(now)
            fits = key.quota.fits_at(demand.tokens_for(key), now)
            if ready is None or fits is None:
                continue
            start = max(ready, fits)
            if key.name in demand.avoid:
                start = max(start, demand.avoid_until)
            starts.append(start)
        return min(starts, default=None)

    def _arm_timer(self, now: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._waiters:
            return
        wake_at = self._next_change(now)
        if wake_at is not None:
            self._timer = asyncio.get_running_loop().call_at(wake_at, self._on_timer)

    def _next_change(self, now: float) -> float | None:
        """Return the next moment a waiting call might fit where it did not: a cooldown
        or breaker ending, a window rolling on, or an avoided key's pause ending."""
        moments = [w.demand.avoid_until for w in self._waiters if w.demand.avoid_until > now]
        for waiter in self._waiters[:8]:
            for key in self._keys:
                ready = key.ready_at(now)
                fits = key.quota.fits_at(waiter.demand.tokens_for(key), now)
                if ready is not None and fits is not None and max(ready, fits) > now:
                    moments.append(max(ready, fits))
        return min(moments, default=None)

    def _on_timer(self) -> None:
        self._timer = None
        self._dispatch(check_deadlines=False)

    def _apply_fault(self, key: PooledKey, error: UpstreamError, now: float) -> None:
        if isinstance(error, UpstreamAuthError):
            if key.disabled_reason is None:
                logger.warning("key %s disabled: %s", key.name, error.reason)
            key.disabled_reason = error.reason
            self._sharing.disable(key, error.reason)
        elif isinstance(error, UpstreamRateLimitError):
            self._cool_down(key, error, now)
        elif isinstance(error, UpstreamBadRequestError):
            key.breaker.on_success()  # The key responded and rejected the request itself.
        elif key.breaker.on_failure(now):
            self._sharing.open_circuit(key, self._config.circuit_breaker.reset_s)
            logger.warning(
                "key %s circuit open for %.1f s after %d consecutive failures",
                key.name,
                self._config.circuit_breaker.reset_s,
                key.breaker.consecutive_failures,
            )

    def _cool_down(self, key: PooledKey, error: UpstreamRateLimitError, now: float) -> None:
        wait_s = error.retry_after_s
        long_wait = wait_s is not None and wait_s >= self._config.exhausted_after_s
        if error.quota_exhausted or long_wait:
            key.exhausted_reason = error.reason
            key.exhausted_until = None if wait_s is None else now + wait_s
            self._sharing.exhaust(key, error.reason, wait_s)
            logger.warning("key %s exhausted: %s", key.name, error.reason)
            return
        if wait_s is None:
            wait_s = self._config.default_cooldown_s
        elif key.quota.limited:
            # The pool sent this call because the key's windows had room for it.
            key.quota.widen(wait_s)
        key.cooldown_until = max(key.cooldown_until, now + wait_s)
        key.probing = True
        self._sharing.cool_down(key, wait_s)
        logger.warning("key %s cooling down for %.2f s", key.name, key.cooldown_until - now)

    def _raise_if_unserviceable(self, demand: Demand, now: float) -> None:
        start = self._earliest_start(demand, now)
        if start is not None and start <= demand.deadline:
            return
        raise self._unavailable_error(demand, start, now)

    def _unavailable_error(
        self, demand: Demand, start: float | None, now: float
    ) -> NoKeyAvailableError | CallExceedsQuotaError:
        states = [key.state(now) for key in self._keys]
        out = sum(state in (KeyState.DISABLED, KeyState.EXHAUSTED) for state in states)
        summary = _describe_states(states)
        if start is None:
            too_large = self._too_large_error(demand)
            if too_large is not None and out < len(self._keys):
                return too_large
            message = (
                f"No API key is available ({summary}): none will return by itself; "
                "fix or re-enable them, then retry."
            )
            return NoKeyAvailableError(
                message, key_count=len(self._keys), inactive_count=out, retry_after_s=None
            )
        wait_s = start - now
        left_s = max(0.0, demand.deadline - now)
        if all(state is KeyState.ACTIVE for state in states):
            reason = f"every key's quota is taken, and the first has room in {wait_s:.1f} s"
        else:
            reason = f"the first returns in {wait_s:.1f} s"
        message = (
            f"No API key is available ({summary}): {reason}, after this request's deadline "
            f"in {left_s:.1f} s. Retry in {math.ceil(wait_s)} s, or raise "
            "gateway.request_deadline_s."
        )
        return NoKeyAvailableError(
            message, key_count=len(self._keys), inactive_count=out, retry_after_s=wait_s
        )

    def _too_large_error(self, demand: Demand) -> CallExceedsQuotaError | None:
        windows = [key.quota.tokens for key in self._keys]
        if any(window is None for window in windows):
            return None
        largest = max(window.limit for window in windows if window is not None)
        tokens = min(demand.tokens_for(key) for key in self._keys)
        if tokens <= largest:
            return None
        return CallExceedsQuotaError(
            f"The call needs {tokens} tokens (prompt plus max_tokens), more than any key's "
            f"token window admits ({largest}). Lower max_tokens or shorten the prompt, or "
            "give a key a larger tokens_per_minute if its deployment's quota allows it.",
            tokens=tokens,
            largest_window=largest,
        )

    def earliest_return_s(self) -> float | None:
        """Return the seconds until the first cooling key may take calls again, if any."""
        now = time.monotonic()
        waits = [key.cooldown_until - now for key in self._keys if key.cooldown_until > now]
        return min(waits, default=None)

    def _queue_full_error(self, demand: Demand, now: float) -> ServiceAtCapacityError:
        start = self._earliest_start(demand, now)
        retry_after_s = max(1.0, (start or now) - now)
        return ServiceAtCapacityError(
            f"Service at maximum capacity: {len(self._waiters)} calls are already waiting "
            f"for a key. Retry in {math.ceil(retry_after_s)} s, add keys, or raise "
            "gateway.max_queue_size.",
            max_concurrent_requests=self._config.max_concurrent_requests,
            retry_after_s=retry_after_s,
        )

    def _deadline_error(self, demand: Demand) -> ServiceAtCapacityError:
        waiting = len(self._waiters)
        return ServiceAtCapacityError(
            "Service at maximum capacity: no key had room for this call before the "
            f"request's deadline ({waiting} {'call' if waiting == 1 else 'calls'} still "
            "waiting). Retry later, add keys, or raise their quotas.",
            max_concurrent_requests=self._config.max_concurrent_requests,
            retry_after_s=self._config.default_cooldown_s,
        )


def _deadline_of(waiter: _Waiter) -> float:
    return waiter.demand.deadline


def _describe_states(states: list[KeyState]) -> str:
    counts = {state: states.count(state) for state in KeyState if state in states}
    parts = [f"{count} {state.value.replace('_', ' ')}" for state, count in counts.items()]
    noun = "key" if len(states) == 1 else "keys"
    return f"{len(states)} {noun}: " + ", ".join(parts)
