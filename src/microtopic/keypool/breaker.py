"""A circuit breaker per key, for failures that show the key's backend is unwell.

Closed: calls flow. After `failure_threshold` consecutive failures (5xx, timeouts,
connection resets) it opens and the key takes no calls for `reset_s`. Then it is
half-open: one probe call may go; success closes it, failure opens it again.
"""

from __future__ import annotations

from enum import StrEnum

from microtopic.config import CircuitBreakerConfig


class CircuitState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    """Counts consecutive failures of one key and decides whether it may be called."""

    def __init__(self, config: CircuitBreakerConfig) -> None:
        self._threshold = config.failure_threshold
        self._reset_s = config.reset_s
        self.consecutive_failures = 0
        self.opened_until: float | None = None
        self._probe_in_flight = False

    def state(self, now: float) -> CircuitState:
        if self.opened_until is None:
            return CircuitState.CLOSED
        if now < self.opened_until:
            return CircuitState.OPEN
        return CircuitState.HALF_OPEN

    def allows(self, now: float) -> bool:
        """Return whether a call may go now: closed, or half-open with no probe out."""
        state = self.state(now)
        if state is CircuitState.CLOSED:
            return True
        return state is CircuitState.HALF_OPEN and not self._probe_in_flight

    def on_admit(self, now: float) -> None:
        """Note that a call was sent; in the half-open state it is the probe."""
        if self.state(now) is CircuitState.HALF_OPEN:
            self._probe_in_flight = True

    def on_success(self) -> None:
        self.consecutive_failures = 0
        self.opened_until = None
        self._probe_in_flight = False

    def on_failure(self, now: float) -> bool:
        """Count a failure; return True when this one opened the circuit."""
        self.consecutive_failures += 1
        was_probe = self._probe_in_flight
        self._probe_in_flight = False
        if was_probe or self.consecutive_failures >= self._threshold:
            opening = self.state(now) is not CircuitState.OPEN
            self.opened_until = now + self._reset_s
            return opening
        return False

    def on_abandon(self) -> None:
        """Forget a probe that ended without a response (cancelled), so another may go."""
        self._probe_in_flight = False

    def reset(self) -> None:
        self.on_success()
