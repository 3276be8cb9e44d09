"""Pools in several processes sharing their keys' state through a real Redis.

Each test builds two pools over the same key names and one Redis namespace, as
two API or worker processes would, and drives leases directly as in test_pool.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable

import pytest
import redis.asyncio

from microtopic.config import GatewayConfig, QuotaConfig
from microtopic.errors import (
    NoKeyAvailableError,
    ServiceAtCapacityError,
    UpstreamAuthError,
    UpstreamRateLimitError,
    UpstreamServerError,
)
from microtopic.keypool import Demand, KeyPool, KeyState, Lease, PooledKey
from microtopic.keypool.redis_state import RedisPoolState
from microtopic.keypool.sharing import PoolSharing
from tests.keypool.test_pool import key

# Ten scaled seconds of quota pass in one second, so windows are 1 s (RPM) and 6 s (TPM).
GATEWAY = GatewayConfig(quota=QuotaConfig(margin_s=0.0, time_scale=10.0))

PoolFactory = Callable[..., KeyPool]


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[redis.asyncio.Redis]:
    connection = redis.asyncio.Redis.from_url(redis_url)
    yield connection
    await connection.aclose()


@pytest.fixture
async def shared_pools(
    client: redis.asyncio.Redis, redis_namespace: str
) -> AsyncIterator[PoolFactory]:
    """Build pools that share `redis_namespace`; each is started and closed after the test."""
    pools: list[KeyPool] = []

    def build(*keys: PooledKey, config: GatewayConfig = GATEWAY) -> KeyPool:
        store = RedisPoolState(client, redis_namespace, probe_s=config.circuit_breaker.reset_s)
        pool = KeyPool(list(keys), config, PoolSharing(store))
        pool.start()
        pools.append(pool)
        return pool

    yield build
    for pool in pools:
        await pool.aclose()


def demand(within_s: float = 0.3, tokens: int = 10) -> Demand:
    return Demand(lambda _key: tokens, time.monotonic() + within_s)


async def take(pool: KeyPool, within_s: float = 0.3, tokens: int = 10) -> Lease | None:
    """Acquire and send one call, or return None when the pool raises instead."""
    try:
        lease = await pool.acquire(demand(within_s, tokens))
    except (NoKeyAvailableError, ServiceAtCapacityError):
        return None
    pool.mark_sent(lease)
    return lease


async def settle(pool: KeyPool) -> None:
    """Let the pool's background writes reach Redis."""
    await pool.aclose()
    pool.start()


async def test_request_window_holds_across_pools(
    shared_pools: PoolFactory,
) -> None:
    first = shared_pools(key("east", rpm=60))  # 10 requests per 10 s window, scaled to 1 s
    second = shared_pools(key("east", rpm=60))

    leases = await asyncio.gather(*(take(pool) for pool in [first, second] * 15))

    granted = [lease for lease in leases if lease is not None]
    assert len(granted) == 10
    assert {lease.key.name for lease in granted} == {"east"}


async def test_token_window_holds_across_pools(
    shared_pools: PoolFactory,
) -> None:
    first = shared_pools(key("east", tpm=600))  # 600 tokens per minute, scaled to 6 s
    second = shared_pools(key("east", tpm=600))

    leases = await asyncio.gather(*(take(pool, tokens=100) for pool in [first, second] * 6))

    assert sum(lease is not None for lease in leases) == 6


async def test_rejected_call_waits_for_shared_window(
    shared_pools: PoolFactory,
) -> None:
    first = shared_pools(key("east", rpm=6))  # one request per 1 s window
    second = shared_pools(key("east", rpm=6))
    assert await take(first) is not None

    started = time.monotonic()
    lease = await take(second, within_s=3.0)
    waited_s = time.monotonic() - started

    assert lease is not None
    assert 0.8 < waited_s < 1.6


async def test_unsent_call_refunds_shared_charge(shared_pools: PoolFactory) -> None:
    first = shared_pools(key("east", rpm=6))
    second = shared_pools(key("east", rpm=6))
    lease = await first.acquire(demand())

    first.release(lease)  # never sent
    await settle(first)

    assert await take(second) is not None


class _SlowWrites(RedisPoolState):
    """Reaches Redis 0.3 s late with each sending date, as a long write queue would."""

    async def restamp(
        self, name: str, call_id: str, tokens: int, sent_at_ms: float | None = None
    ) -> None:
        await asyncio.sleep(0.3)
        await super().restamp(name, call_id, tokens, sent_at_ms)


async def test_restamp_dates_call_from_sending(
    client: redis.asyncio.Redis, redis_namespace: str
) -> None:
    store = _SlowWrites(client, redis_namespace, probe_s=1.0)
    pool = KeyPool([key("east", rpm=60)], GATEWAY, PoolSharing(store))
    lease = await pool.acquire(demand())
    admitted_ms = lease.admission.at_ms
    assert admitted_ms is not None
    await asyncio.sleep(0.2)

    pool.mark_sent(lease)
    sent_ms = lease.admission.sent_at_ms(time.monotonic())
    await pool.aclose()

    assert sent_ms is not None
    assert sent_ms >= admitted_ms + 200
    dated_ms = await client.zscore(f"{redis_namespace}:pool:east:requests", lease.call_id)
    assert dated_ms == pytest.approx(sent_ms, abs=2.0)


async def test_restamp_never_moves_date_back(
    client: redis.asyncio.Redis, redis_namespace: str
) -> None:
    store = RedisPoolState(client, redis_namespace, probe_s=1.0)
    quota = key("east", rpm=60).quota
    admission = await store.admit("east", quota, "call-1", 10)
    requests = f"{redis_namespace}:pool:east:requests"

    await store.restamp("east", "call-1", 10, admission.at_ms - 500)
    assert await client.zscore(requests, "call-1") == admission.at_ms
    await asyncio.sleep(0.05)
    await store.restamp("east", "call-1", 10, admission.at_ms + 40)
    assert await client.zscore(requests, "call-1") == admission.at_ms + 40
    await store.restamp("east", "call-1", 10, 10.0**15)  # a future date is capped at now
    assert admission.at_ms + 40 < await client.zscore(requests, "call-1") < 10.0**15


async def test_cooldown_applies_to_every_pool(shared_pools: PoolFactory) -> None:
    first = shared_pools(key("east"), key("west"))
    second = shared_pools(key("east"), key("west"))
    lease = await first.acquire(demand())
    cooling = lease.key.name
    first.failed(lease, UpstreamRateLimitError("429", retry_after_s=5.0))
    first.release(lease)
    await settle(first)

    leases = [await take(second) for _ in range(4)]

    assert all(lease is not None and lease.key.name != cooling for lease in leases)
    await second.sync()
    assert second.get(cooling).state(time.monotonic()) is KeyState.COOLING
    assert 4.0 < second.cooldown_remaining_s(second.get(cooling)) <= 5.0


async def test_disabled_key_rejected_until_enabled(
    shared_pools: PoolFactory,
) -> None:
    first = shared_pools(key("east"))
    second = shared_pools(key("east"))
    lease = await first.acquire(demand())
    first.failed(lease, UpstreamAuthError("401 from the provider", status_code=401))
    first.release(lease)
    await settle(first)

    refused = await take(second)
    first.enable("east")
    await settle(first)
    await second.sync()
    admitted = await take(second)

    assert refused is None
    assert admitted is not None
    assert second.get("east").state(time.monotonic()) is KeyState.ACTIVE


async def test_open_circuit_applies_to_every_pool(
    shared_pools: PoolFactory,
) -> None:
    first = shared_pools(key("east"))
    second = shared_pools(key("east"))
    for _ in range(GATEWAY.circuit_breaker.failure_threshold):
        lease = await first.acquire(demand())
        first.mark_sent(lease)
        first.failed(lease, UpstreamServerError("500 from the provider", status_code=500))
        first.release(lease)
    await settle(first)

    refused = await take(second)

    assert refused is None
    assert second.get("east").state(time.monotonic()) is KeyState.CIRCUIT_OPEN


async def test_pools_report_same_shared_counters(shared_pools: PoolFactory) -> None:
    first = shared_pools(key("east", rpm=600), key("west", rpm=600))
    second = shared_pools(key("east", rpm=600), key("west", rpm=600))
    for pool in (first, second, first):
        lease = await pool.acquire(demand())
        pool.mark_sent(lease)
        pool.succeeded(lease, {})
        pool.release(lease)
    lease = await second.acquire(demand())
    second.mark_sent(lease)
    second.failed(lease, UpstreamServerError("503 from the provider", status_code=503))
    second.release(lease)
    await settle(first)
    await settle(second)

    await first.sync()
    await second.sync()

    totals = []
    for pool in (first, second):
        states = [pool.get(name).shared for name in ("east", "west")]
        assert all(state is not None for state in states)
        totals.append([(s.admitted, s.served, s.errors, s.requests_used) for s in states if s])
    assert totals[0] == totals[1]
    assert sum(admitted for admitted, _, _, _ in totals[0]) == 4
    assert sum(served for _, served, _, _ in totals[0]) == 3
    assert sum(errors for _, _, errors, _ in totals[0]) == 1


async def test_health_check_reaches_disabled_key(shared_pools: PoolFactory) -> None:
    first = shared_pools(key("east", rpm=600))
    second = shared_pools(key("east", rpm=600))
    first.disable("east", "revoked")
    await settle(first)
    await second.sync()

    lease = await second.lease_now(second.get("east"), 16)

    assert lease is not None
    second.release(lease)


async def test_redis_outage_falls_back_and_warns_once(
    caplog: pytest.LogCaptureFixture, unused_tcp_port: int
) -> None:
    client = redis.asyncio.Redis(host="127.0.0.1", port=unused_tcp_port, socket_timeout=0.5)
    store = RedisPoolState(client, "microtopic-test-offline", probe_s=1.0)
    pool = KeyPool([key("east", rpm=60)], GATEWAY, PoolSharing(store))
    caplog.set_level(logging.WARNING, logger="microtopic.keypool.sharing")

    leases = [await take(pool) for _ in range(12)]
    await pool.aclose()
    await client.aclose()

    assert sum(lease is not None for lease in leases) == 10
    warnings = [r for r in caplog.records if r.name == "microtopic.keypool.sharing"]
    assert len(warnings) == 1
    assert "could not be reached" in warnings[0].getMessage()
