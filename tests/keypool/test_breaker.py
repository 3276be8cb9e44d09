"""The per-key circuit breaker, on explicit clock values."""

from __future__ import annotations

from microtopic.config import CircuitBreakerConfig
from microtopic.keypool import CircuitBreaker, CircuitState


def breaker() -> CircuitBreaker:
    return CircuitBreaker(CircuitBreakerConfig(failure_threshold=3, reset_s=30.0))


def test_opens_after_threshold_consecutive_failures() -> None:
    circuit = breaker()

    opened = [circuit.on_failure(float(moment)) for moment in range(3)]

    assert opened == [False, False, True]
    assert circuit.state(2.0) is CircuitState.OPEN
    assert not circuit.allows(31.9)


def test_success_resets_the_count() -> None:
    circuit = breaker()
    circuit.on_failure(0.0)
    circuit.on_failure(1.0)

    circuit.on_success()
    circuit.on_failure(2.0)

    assert circuit.state(2.0) is CircuitState.CLOSED


def test_half_open_allows_one_probe() -> None:
    circuit = breaker()
    for moment in range(3):
        circuit.on_failure(float(moment))

    assert circuit.state(32.0) is CircuitState.HALF_OPEN
    assert circuit.allows(32.0)
    circuit.on_admit(32.0)
    assert not circuit.allows(32.0)


def test_probe_success_closes_and_failure_reopens() -> None:
    circuit = breaker()
    for moment in range(3):
        circuit.on_failure(float(moment))
    circuit.on_admit(32.0)

    reopened = circuit.on_failure(33.0)

    assert reopened
    assert circuit.state(33.0) is CircuitState.OPEN
    assert circuit.opened_until == 63.0

    circuit.on_admit(63.0)
    circuit.on_success()
    assert circuit.state(63.0) is CircuitState.CLOSED


def test_abandoned_probe_frees_the_probe_slot() -> None:
    circuit = breaker()
    for moment in range(3):
        circuit.on_failure(float(moment))
    circuit.on_admit(32.0)

    circuit.on_abandon()

    assert circuit.allows(32.0)
