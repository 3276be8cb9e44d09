"""Admission, selection, queueing, faults and cancellation in the key pool.

The pool never calls providers (the gateway does), so these keys carry a provider
that fails if called, and each test drives leases and outcomes directly.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter

import pytest

from microtopic.config import (
    CircuitBreakerConfig,
    GatewayConfig,
    KeyConfig,
    ProviderKind,
    QuotaConfig,
)
from microtopic.errors import (
    CallExceedsQuotaError,
    ContentFilteredError,
    NoKeyAvailableError,
    NotFoundError,
    ServiceAtCapacityError,
    UpstreamAuthError,
    UpstreamRateLimitError,
    UpstreamServerError,
)
from microtopic.keypool import Demand, KeyPool, KeyState, Lease, PooledKey
from microtopic.providers.base import ChatRequest, ChatResult, PassthroughRequest


class UnusedProvider:
    """A provider for pooled keys that fails if called, because the pool only hands keys out."""

    async def complete(self, request: ChatRequest, *, timeout_s: float) -> ChatResult:
        raise AssertionError("the key pool must not call its providers")

    def admission_tokens(self, request: ChatRequest) -> int:
        raise AssertionError("the key pool must not call its providers")

    async def check(self, *, timeout_s: float) -> None:
        raise AssertionError("the key pool must not call its providers")

    async def forward(self, request: PassthroughRequest, *, timeout_s: float) -> ChatResult:
        raise AssertionError("the key pool must not call its providers")

    async def aclose(self) -> None:
        return None


def key(
    name: str,
    *,
    rpm: int | None = None,
    tpm: int | None = None,
    max_concurrency: int | None = None,
    priority: int = 1,
) -> PooledKey:
    config = KeyConfig(
        name=name,
        provider=ProviderKind.LOCAL,
        max_concurrency=max_concurrency,
        requests_per_minute=rpm,
        tokens_per_minute=tpm,
        priority=priority,
    )
    return PooledKey(config=config, provider=UnusedProvider())


def make_pool(*keys: PooledKey, **config: object) -> KeyPool:
    settings = {"quota": QuotaConfig(margin_s=0.0), **config}
    return KeyPool(list(keys), GatewayConfig.model_validate(settings))


def demand(
    tokens: int = 100,
    *,
    deadline_s: float = 5.0,
    avoid: frozenset[str] = frozenset(),
    avoid_for_s: float = 0.0,
) -> Demand:
    now = time.monotonic()
    return Demand(lambda _key: tokens, now + deadline_s, avoid, now + avoid_for_s)


async def take(pool: KeyPool, count: int, tokens: int = 100) -> list[Lease]:
    return [await pool.acquire(demand(tokens)) for _ in range(count)]


def release_all(pool: KeyPool, leases: list[Lease]) -> None:
    for lease in leases:
        pool.release(lease)


async def test_round_robin_is_even() -> None:
    pool = make_pool(key("east"), key("west"), key("north"), selection="round_robin")

    chosen = []
    for _ in range(300):
        lease = await pool.acquire(demand())
        chosen.append(lease.key.name)
        pool.release(lease)

    assert chosen[:6] == ["east", "west", "north", "east", "west", "north"]
    assert Counter(chosen) == {"east": 100, "west": 100, "north": 100}
    assert [k.usage_count for k in pool.keys] == [100, 100, 100]


async def test_quota_aware_spreads_calls_by_quota() -> None:
    pool = make_pool(
        key("a", rpm=60),
        key("b", rpm=120),
        key("c", rpm=240),
        key("d", rpm=480),
        max_concurrent_requests=1000,
    )

    leases = await take(pool, 150)  # the four 10 s windows hold 10 + 20 + 40 + 80

    assert Counter(lease.key.name for lease in leases) == {"a": 10, "b": 20, "c": 40, "d": 80}
    assert [k.quota.snapshot(time.monotonic()).requests_remaining for k in pool.keys] == [
        0,
        0,
        0,
        0,
    ]


async def test_quota_aware_prefers_the_roomiest_key() -> None:
    pool = make_pool(key("small", rpm=60), key("large", rpm=600))

    first = await pool.acquire(demand())

    assert first.key.name == "large"


async def test_least_busy_picks_fewest_calls_in_flight() -> None:
    pool = make_pool(key("east"), key("west"), selection="least_busy")
    held = await pool.acquire(demand())

    other = await pool.acquire(demand())

    assert {held.key.name, other.key.name} == {"east", "west"}


async def test_second_priority_group_takes_only_overflow() -> None:
    pool = make_pool(key("ptu", max_concurrency=2), key("paygo", priority=2))

    leases = await take(pool, 2)
    overflow = await pool.acquire(demand())
    release_all(pool, leases)
    back = await pool.acquire(demand())

    assert [lease.key.name for lease in leases] == ["ptu", "ptu"]
    assert overflow.key.name == "paygo"
    assert back.key.name == "ptu"


async def test_key_concurrency_and_global_cap_are_never_exceeded() -> None:
    pool = make_pool(
        key("east", max_concurrency=2), key("west", max_concurrency=5), max_concurrent_requests=4
    )
    in_flight: Counter[str] = Counter()
    peaks: Counter[str] = Counter()
    total_peak = 0

    async def call() -> None:
        nonlocal total_peak
        lease = await pool.acquire(demand())
        in_flight[lease.key.name] += 1
        peaks[lease.key.name] = max(peaks[lease.key.name], in_flight[lease.key.name])
        total_peak = max(total_peak, sum(in_flight.values()))
        await asyncio.sleep(0.005)
        in_flight[lease.key.name] -= 1
        pool.release(lease)

    async with asyncio.TaskGroup() as group:
        for _ in range(40):
            group.create_task(call())

    assert peaks["east"] <= 2
    assert total_peak == 4
    assert pool.capacity().active_requests == 0


async def test_waiters_are_served_in_arrival_order() -> None:
    pool = make_pool(key("east", max_concurrency=1))
    held = await pool.acquire(demand())
    order: list[int] = []

    async def wait(index: int) -> None:
        lease = await pool.acquire(demand())
        order.append(index)
        pool.release(lease)

    tasks = [asyncio.create_task(wait(index)) for index in range(5)]
    await asyncio.sleep(0.01)
    assert pool.capacity().queued_requests == 5
    pool.release(held)
    await asyncio.gather(*tasks)

    assert order == [0, 1, 2, 3, 4]


async def test_waiters_with_earlier_deadlines_go_first() -> None:
    pool = make_pool(key("east", max_concurrency=1))
    first_lease = await pool.acquire(demand())
    order: list[float] = []

    async def wait(deadline_s: float) -> None:
        lease = await pool.acquire(demand(deadline_s=deadline_s))
        order.append(deadline_s)
        pool.release(lease)

    # A later request's call arrives first; an earlier request's next call, after it.
    tasks = [asyncio.create_task(wait(deadline_s)) for deadline_s in (9.0, 7.0, 8.0, 7.0)]
    await asyncio.sleep(0.01)
    pool.release(first_lease)
    await asyncio.gather(*tasks)

    assert order == [7.0, 7.0, 8.0, 9.0]


async def test_full_queue_fails_at_once() -> None:
    pool = make_pool(key("east", max_concurrency=1), max_queue_size=2)
    await pool.acquire(demand())
    waiting = [asyncio.create_task(pool.acquire(demand())) for _ in range(2)]
    await asyncio.sleep(0.01)

    started = time.monotonic()
    with pytest.raises(ServiceAtCapacityError) as caught:
        await pool.acquire(demand(deadline_s=30.0))

    assert time.monotonic() - started < 0.05
    assert "2 calls are already waiting" in caught.value.message
    assert caught.value.retry_after_s >= 1.0
    for task in waiting:
        task.cancel()
    await asyncio.gather(*waiting, return_exceptions=True)


async def test_waiting_past_the_deadline_is_capacity_error() -> None:
    pool = make_pool(key("east", max_concurrency=1))
    await pool.acquire(demand())

    with pytest.raises(ServiceAtCapacityError) as caught:
        await pool.acquire(demand(deadline_s=0.05))

    assert "before the request's deadline" in caught.value.message
    assert pool.capacity().queued_requests == 0


async def test_full_window_waits_for_room() -> None:
    # 60 RPM at time scale 100: 10 calls per 0.1 s window.
    pool = make_pool(
        key("east", rpm=60),
        quota=QuotaConfig(time_scale=100.0, margin_s=0.0),
        max_concurrent_requests=100,
    )
    leases = await take(pool, 10)
    started = time.monotonic()

    late = await pool.acquire(demand())

    waited_s = time.monotonic() - started
    assert late.key.name == "east"
    assert 0.05 < waited_s < 1.0
    release_all(pool, [*leases, late])


async def test_cooling_key_is_skipped_then_returns() -> None:
    pool = make_pool(key("east"), key("west"), selection="round_robin")
    lease = await pool.acquire(demand())
    pool.failed(lease, UpstreamRateLimitError("rate limited (429)", retry_after_s=0.2))
    pool.release(lease)

    during = [await pool.acquire(demand()) for _ in range(3)]
    release_all(pool, during)
    await asyncio.sleep(0.25)
    after = {(await pool.acquire(demand())).key.name for _ in range(2)}

    assert lease.key.name == "east"
    assert [held.key.name for held in during] == ["west", "west", "west"]
    assert after == {"east", "west"}


async def test_key_takes_one_call_after_429_cooldown() -> None:
    pool = make_pool(key("east"))
    lease = await pool.acquire(demand())
    pool.failed(lease, UpstreamRateLimitError("rate limited (429)", retry_after_s=0.05))
    pool.release(lease)
    await asyncio.sleep(0.06)

    probe = await pool.acquire(demand())
    waiting = asyncio.create_task(pool.acquire(demand()))
    await asyncio.sleep(0.05)
    assert not waiting.done()
    pool.succeeded(probe, {})
    pool.release(probe)
    after = await asyncio.wait_for(waiting, 1.0)
    more = await pool.acquire(demand())

    assert after.key.name == more.key.name == "east"
    release_all(pool, [after, more])


async def test_longest_cooldown_wins() -> None:
    pool = make_pool(key("east"))
    first = await pool.acquire(demand())
    second = await pool.acquire(demand())

    pool.failed(first, UpstreamRateLimitError("rate limited (429)", retry_after_s=3.0))
    pool.failed(second, UpstreamRateLimitError("rate limited (429)", retry_after_s=1.0))

    remaining_s = pool.cooldown_remaining_s(pool.get("east"))
    assert 2.5 < remaining_s <= 3.0
    assert pool.get("east").state(time.monotonic()) is KeyState.COOLING


async def test_429_without_header_uses_default_cooldown() -> None:
    pool = make_pool(key("east"), default_cooldown_s=7.0)
    lease = await pool.acquire(demand())

    pool.failed(lease, UpstreamRateLimitError("rate limited (429)"))

    assert 6.5 < pool.cooldown_remaining_s(pool.get("east")) <= 7.0


async def test_only_key_cooling_waits_within_the_deadline() -> None:
    pool = make_pool(key("east"))
    lease = await pool.acquire(demand())
    pool.failed(lease, UpstreamRateLimitError("rate limited (429)", retry_after_s=0.15))
    pool.release(lease)
    started = time.monotonic()

    again = await pool.acquire(demand(deadline_s=2.0))

    assert again.key.name == "east"
    assert 0.1 < time.monotonic() - started < 1.0


async def test_cooldown_past_the_deadline_fails_at_once() -> None:
    pool = make_pool(key("east"), key("west"))
    for _ in range(2):
        lease = await pool.acquire(demand())
        pool.failed(lease, UpstreamRateLimitError("rate limited (429)", retry_after_s=42.0))
        pool.release(lease)
    started = time.monotonic()

    with pytest.raises(NoKeyAvailableError) as caught:
        await pool.acquire(demand(deadline_s=5.0))

    assert time.monotonic() - started < 0.05
    assert caught.value.retry_after_s == pytest.approx(42.0, abs=0.5)
    assert "2 keys: 2 cooling" in caught.value.message
    assert "the first returns in 4" in caught.value.message


async def test_full_quota_past_the_deadline_says_so() -> None:
    pool = make_pool(key("east", rpm=6))
    lease = await pool.acquire(demand())

    with pytest.raises(NoKeyAvailableError) as caught:
        await pool.acquire(demand(deadline_s=1.0))

    assert "every key's quota is taken, and the first has room in" in caught.value.message
    assert "gateway.request_deadline_s" in caught.value.message
    pool.release(lease)


@pytest.mark.parametrize(
    "error",
    [
        UpstreamRateLimitError("quota used up", quota_exhausted=True),
        UpstreamRateLimitError("rate limited (429)", retry_after_s=86_400.0),
    ],
)
async def test_quota_gone_marks_key_exhausted(error: UpstreamRateLimitError) -> None:
    pool = make_pool(key("east"), key("west"), selection="round_robin")
    lease = await pool.acquire(demand())
    pool.failed(lease, error)
    pool.release(lease)

    east = pool.get("east")
    later = [(await pool.acquire(demand())).key.name for _ in range(3)]

    assert east.state(time.monotonic()) is KeyState.EXHAUSTED
    assert east.exhausted_reason == error.reason
    assert later == ["west", "west", "west"]


async def test_auth_failure_disables_until_enabled() -> None:
    pool = make_pool(key("east"), key("west"))
    lease = await pool.acquire(demand())
    pool.failed(lease, UpstreamAuthError("the key was rejected (401)", status_code=401))
    pool.release(lease)
    failed_key = lease.key

    assert not failed_key.is_active
    assert failed_key.errors_by_class == {"upstream_auth_failed": 1}
    pool.enable(failed_key.name)
    assert failed_key.state(time.monotonic()) is KeyState.ACTIVE


async def test_all_disabled_raises_at_once() -> None:
    pool = make_pool(key("east"), key("west"))
    for name in ("east", "west"):
        pool.disable(name, "the key was rejected (401)")

    with pytest.raises(NoKeyAvailableError) as caught:
        async with asyncio.timeout(1.0):
            await pool.acquire(demand(deadline_s=30.0))

    assert caught.value.key_count == 2
    assert caught.value.inactive_count == 2
    assert caught.value.retry_after_s is None
    assert "2 keys: 2 disabled" in caught.value.message
    assert "re-enable" in caught.value.message


async def test_waiting_call_fails_when_last_key_is_disabled() -> None:
    pool = make_pool(key("east", max_concurrency=1))
    held = await pool.acquire(demand())
    waiting = asyncio.create_task(pool.acquire(demand(deadline_s=5.0)))
    await asyncio.sleep(0.01)

    pool.failed(held, UpstreamAuthError("the key was rejected (401)", status_code=401))

    with pytest.raises(NoKeyAvailableError):
        await asyncio.wait_for(waiting, timeout=1.0)


async def test_call_too_large_for_any_window_is_refused() -> None:
    pool = make_pool(key("east", tpm=1_000), key("west", tpm=2_000))

    with pytest.raises(CallExceedsQuotaError) as caught:
        await pool.acquire(demand(tokens=5_000))

    assert caught.value.tokens == 5_000
    assert caught.value.largest_window == 2_000
    assert "more than any key's token window admits (2000)" in caught.value.message
    assert "larger tokens_per_minute" in caught.value.message


async def test_content_filter_is_not_held_against_the_key() -> None:
    pool = make_pool(key("east"))
    lease = await pool.acquire(demand())

    pool.failed(lease, ContentFilteredError("filtered", categories=["violence"]))

    assert lease.key.error_count == 0
    assert lease.key.state(time.monotonic()) is KeyState.ACTIVE


async def test_breaker_opens_after_consecutive_server_errors() -> None:
    breaker = CircuitBreakerConfig(failure_threshold=3, reset_s=0.1)
    pool = make_pool(key("east"), key("west"), circuit_breaker=breaker, selection="round_robin")
    east = pool.get("east")
    for _ in range(3):
        lease = await pool.acquire(demand(avoid=frozenset({"west"}), avoid_for_s=60.0))
        pool.failed(lease, UpstreamServerError("server error (500)", status_code=500))
        pool.release(lease)

    assert east.state(time.monotonic()) is KeyState.CIRCUIT_OPEN
    assert (await pool.acquire(demand())).key.name == "west"
    await asyncio.sleep(0.12)
    assert east.state(time.monotonic()) is KeyState.HALF_OPEN
    probe = await pool.acquire(demand(avoid=frozenset({"west"}), avoid_for_s=60.0))
    assert probe.key is east
    assert not east.can_take(time.monotonic())  # one probe at a time
    pool.succeeded(probe, {})
    assert east.state(time.monotonic()) is KeyState.ACTIVE


async def test_avoided_key_is_used_only_after_the_pause() -> None:
    pool = make_pool(key("east"), key("west", max_concurrency=1))
    await pool.acquire(demand(avoid=frozenset({"east"})))  # takes west
    started = time.monotonic()

    lease = await pool.acquire(demand(avoid=frozenset({"east"}), avoid_for_s=0.1))

    assert lease.key.name == "east"
    assert time.monotonic() - started >= 0.09


async def test_refund_only_unsent_calls() -> None:
    pool = make_pool(key("east", rpm=60, tpm=10_000))
    unsent = await pool.acquire(demand(tokens=1_000))
    sent = await pool.acquire(demand(tokens=2_000))
    pool.mark_sent(sent)

    pool.release(unsent)
    pool.release(sent)
    pool.release(sent)  # a second release changes nothing

    snapshot = pool.get("east").quota.snapshot(time.monotonic())
    assert (snapshot.requests_used, snapshot.tokens_used) == (1, 2_000)
    assert pool.capacity().active_requests == 0


async def test_cancelling_100_calls_at_random_moments_frees_everything() -> None:
    pool = make_pool(
        key("east", rpm=600, max_concurrency=3),
        key("west", rpm=600, max_concurrency=3),
        max_concurrent_requests=5,
        quota=QuotaConfig(time_scale=20.0, margin_s=0.0),
    )
    rng = random.Random(3)
    cancelled_while: Counter[str] = Counter()

    async def call() -> None:
        try:
            lease = await pool.acquire(demand(deadline_s=30.0))
        except asyncio.CancelledError:
            cancelled_while["queued"] += 1
            raise
        try:
            if rng.random() < 0.5:
                pool.mark_sent(lease)
            await asyncio.sleep(rng.uniform(0.0, 0.05))
        except asyncio.CancelledError:
            cancelled_while["in flight"] += 1
            raise
        finally:
            pool.release(lease)

    tasks = [asyncio.create_task(call()) for _ in range(100)]
    for task in rng.sample(tasks, len(tasks)):
        await asyncio.sleep(rng.uniform(0.0, 0.002))
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)

    # Both kinds happen whatever the machine's speed; their exact split does not matter.
    assert cancelled_while["queued"] >= 5
    assert cancelled_while["in flight"] >= 5
    capacity = pool.capacity()
    assert (capacity.active_requests, capacity.queued_requests) == (0, 0)
    assert capacity.available_slots == 5
    assert [k.active_calls for k in pool.keys] == [0, 0]
    assert (await pool.acquire(demand())).key.name in {"east", "west"}


def test_unknown_name_raises_not_found() -> None:
    pool = make_pool(key("east"))

    with pytest.raises(NotFoundError) as caught:
        pool.get("south")

    assert "'south'" in caught.value.message


def test_empty_pool_is_rejected() -> None:
    with pytest.raises(ValueError, match="at least one key"):
        KeyPool([])
