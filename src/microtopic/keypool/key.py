"""One key of the pool: its client, its quota, its breaker, its state and its counters."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from microtopic.config import GatewayConfig, KeyConfig
from microtopic.keypool.breaker import CircuitBreaker, CircuitState
from microtopic.keypool.quota import KeyQuota
from microtopic.keypool.redis_state import SharedKeyState
from microtopic.providers.base import Provider


class KeyState(StrEnum):
    """The reason a key may or may not take calls now, from the most to the least lasting."""

    DISABLED = "disabled"  # rejected its secret (401/403); back after a passing health check
    EXHAUSTED = "exhausted"  # quota used up; back at the time the provider gave, or after a check
    CIRCUIT_OPEN = "circuit_open"  # failing repeatedly; a probe is allowed after the cool-off
    HALF_OPEN = "half_open"  # the cool-off passed; one probe call decides
    COOLING = "cooling"  # received a 429; back at `cooldown_until`
    ACTIVE = "active"


@dataclass(frozen=True)
class HealthRecord:
    """The outcome of the last health check of a key."""

    status: str  # "ok", "failed" or "skipped"
    checked_at: datetime
    latency_ms: float | None = None
    error_code: str | None = None
    reason: str | None = None


@dataclass(eq=False)
class PooledKey:
    """A key with its provider client, its scheduling state and its counters.

    Times (`cooldown_until`, `exhausted_until`, `shared_ready_at`) are on the
    monotonic clock. With shared state, `shared_ready_at` is when the shared
    windows were last reported to have room again, and `shared` the key's state
    across all processes as last read.

    `probing` is set by a 429 cooldown: once the cooldown ends, the key takes one
    call at a time until a call succeeds, so that a key still rate limited (by
    another consumer of its quota, say) returns one 429 rather than a burst.
    """

    config: KeyConfig
    provider: Provider
    usage_count: int = 0
    error_count: int = 0
    errors_by_class: Counter[str] = field(default_factory=Counter)
    last_used: datetime | None = None
    last_error: str | None = None
    active_calls: int = 0
    disabled_reason: str | None = None
    exhausted_reason: str | None = None
    exhausted_until: float | None = None
    cooldown_until: float = 0.0
    probing: bool = False
    health: HealthRecord | None = None
    shared_ready_at: float = 0.0
    shared: SharedKeyState | None = None
    quota: KeyQuota = field(init=False)
    breaker: CircuitBreaker = field(init=False)

    def __post_init__(self) -> None:
        self.configure(GatewayConfig())

    def configure(self, gateway: GatewayConfig) -> None:
        """Set up the quota windows and breaker from the gateway's settings."""
        self.quota = KeyQuota(
            self.config.requests_per_minute, self.config.tokens_per_minute, gateway.quota
        )
        self.breaker = CircuitBreaker(gateway.circuit_breaker)

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def is_active(self) -> bool:
        """Whether the key is in rotation at all (not disabled after an auth failure)."""
        return self.disabled_reason is None

    @property
    def has_free_slot(self) -> bool:
        limit = self.config.max_concurrency
        return limit is None or self.active_calls < limit

    def state(self, now: float) -> KeyState:
        if self.disabled_reason is not None:
            return KeyState.DISABLED
        if self.is_exhausted(now):
            return KeyState.EXHAUSTED
        circuit = self.breaker.state(now)
        if circuit is CircuitState.OPEN:
            return KeyState.CIRCUIT_OPEN
        if circuit is CircuitState.HALF_OPEN:
            return KeyState.HALF_OPEN
        if now < self.cooldown_until:
            return KeyState.COOLING
        return KeyState.ACTIVE

    def is_exhausted(self, now: float) -> bool:
        if self.exhausted_reason is None:
            return False
        return self.exhausted_until is None or now < self.exhausted_until

    def can_take(self, now: float) -> bool:
        """Return whether the key may be sent a call now, quota aside."""
        return (
            self.disabled_reason is None
            and not self.is_exhausted(now)
            and now >= self.cooldown_until
            and now >= self.shared_ready_at
            and self.breaker.allows(now)
            and self.has_free_slot
            and not (self.probing and self.active_calls > 0)
        )

    def ready_at(self, now: float) -> float | None:
        """Return when the key may take calls again, quota aside; None if not by itself."""
        if self.disabled_reason is not None:
            return None
        times = [now, self.cooldown_until, self.shared_ready_at]
        if self.is_exhausted(now):
            if self.exhausted_until is None:
                return None
            times.append(self.exhausted_until)
        if self.breaker.opened_until is not None:
            times.append(self.breaker.opened_until)
        return max(times)

    def restore(self) -> None:
        """Clear every reason the key was out: after `enable` or a passing health check."""
        self.disabled_reason = None
        self.exhausted_reason = None
        self.exhausted_until = None
        self.cooldown_until = 0.0
        self.probing = False
        self.shared_ready_at = 0.0
        self.breaker.reset()
