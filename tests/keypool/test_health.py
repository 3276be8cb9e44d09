"""Health checks go through the pool's windows and slots, and bring failed keys back.

The keys' providers respond to checks from a script here; the checks of real keys
over HTTP are tested in tests/api/test_key_checks.py.
"""

from __future__ import annotations

import time

from microtopic.config import KeyConfig, ProviderKind
from microtopic.errors import UpstreamAuthError, UpstreamError
from microtopic.keypool import HealthMonitor, KeyState, PooledKey
from microtopic.keypool.health import CHECK_TOKENS
from microtopic.providers.base import ChatRequest, ChatResult, PassthroughRequest
from tests.keypool.test_pool import demand, make_pool


class CheckedProvider:
    """A provider that only responds to health checks: raising `error`, or passing."""

    def __init__(self, error: UpstreamError | None = None) -> None:
        self.error = error
        self.checks = 0

    async def complete(self, request: ChatRequest, *, timeout_s: float) -> ChatResult:
        raise AssertionError("a health check must not send a chat call")

    def admission_tokens(self, request: ChatRequest) -> int:
        raise AssertionError("a health check must not count a chat call")

    async def check(self, *, timeout_s: float) -> None:
        self.checks += 1
        if self.error is not None:
            raise self.error

    async def forward(self, request: PassthroughRequest, *, timeout_s: float) -> ChatResult:
        raise AssertionError("a health check must not forward a call")

    async def aclose(self) -> None:
        return None


def checked_key(name: str, provider: CheckedProvider, *, tpm: int | None = None) -> PooledKey:
    config = KeyConfig(name=name, provider=ProviderKind.LOCAL, tokens_per_minute=tpm)
    return PooledKey(config=config, provider=provider)


async def test_check_charged_to_token_window() -> None:
    key = checked_key("east", CheckedProvider(), tpm=600)
    pool = make_pool(key)

    record = await HealthMonitor(pool).check(key)

    assert record.status == "ok"
    assert key.quota.snapshot(time.monotonic()).tokens_used == CHECK_TOKENS
    assert pool.capacity().active_requests == 0


async def test_check_skipped_when_window_is_full() -> None:
    provider = CheckedProvider()
    key = checked_key("east", provider, tpm=600)
    pool = make_pool(key)
    lease = await pool.acquire(demand(tokens=600 - CHECK_TOKENS + 1))
    pool.mark_sent(lease)

    record = await HealthMonitor(pool).check(key)

    assert record.status == "skipped"
    assert provider.checks == 0


async def test_check_skipped_when_pool_is_at_its_cap() -> None:
    provider = CheckedProvider()
    key = checked_key("east", provider)
    pool = make_pool(key, max_concurrent_requests=1)
    await pool.acquire(demand())

    record = await HealthMonitor(pool).check(key)

    assert record.status == "skipped"
    assert provider.checks == 0


async def test_passing_check_enables_disabled_key() -> None:
    key = checked_key("east", CheckedProvider())
    pool = make_pool(key)
    pool.disable("east", "revoked by hand")

    record = await HealthMonitor(pool).check(key)

    assert record.status == "ok"
    assert key.state(time.monotonic()) is KeyState.ACTIVE
    assert pool.capacity().active_requests == 0


async def test_failing_check_disables_key() -> None:
    provider = CheckedProvider(UpstreamAuthError("the key was rejected (401)", status_code=401))
    key = checked_key("east", provider)
    pool = make_pool(key)

    record = await HealthMonitor(pool).check(key)

    assert record.status == "failed"
    assert record.error_code == "upstream_auth_failed"
    assert key.state(time.monotonic()) is KeyState.DISABLED
    assert pool.capacity().active_requests == 0
