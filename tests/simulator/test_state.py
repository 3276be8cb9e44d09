"""Faults, quota windows and call counts kept by `SimulatorState`."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from microtopic.simulator import Fault, FaultKind, SimulatedKey, SimulatorConfig
from microtopic.simulator.faults import ERROR_FAULT_KINDS, REPLY_FAULT_KINDS
from microtopic.simulator.state import Interruption, SimulatorState
from tests.simulator.support import ManualClock

ALL_KINDS = frozenset(FaultKind)


def _state(**key_fields: object) -> SimulatorState:
    key = SimulatedKey.model_validate({"name": "east", "secret": "s", **key_fields})
    return SimulatorState(SimulatorConfig(keys=[key], seed=7), monotonic=ManualClock())


def test_counted_fault_expires_after_count() -> None:
    state = _state()
    state.set_fault("east", Fault(kind=FaultKind.SERVER_ERROR, count=2))

    faults = [state.take_fault("east", ALL_KINDS) for _ in range(3)]

    assert faults[0] is not None
    assert faults[1] is not None
    assert faults[2] is None


def test_uncounted_fault_stays() -> None:
    state = _state()
    state.set_fault("east", Fault(kind=FaultKind.REVOKED))

    faults = [state.take_fault("east", ALL_KINDS) for _ in range(5)]

    assert all(fault is not None for fault in faults)


def test_reply_fault_waits_for_reply_phase() -> None:
    state = _state()
    state.set_fault("east", Fault(kind=FaultKind.TRUNCATED, count=1))

    error_phase = state.take_fault("east", ERROR_FAULT_KINDS)
    reply_phase = state.take_fault("east", REPLY_FAULT_KINDS)

    assert error_phase is None
    assert reply_phase is not None
    assert reply_phase.kind is FaultKind.TRUNCATED
    assert state.stats()["keys"]["east"]["fault"] is None


def test_fault_rate_of_one_always_draws() -> None:
    state = _state(fault_rates={"service_unavailable": 1.0})

    faults = [state.take_fault("east", ERROR_FAULT_KINDS) for _ in range(3)]

    assert [fault.kind if fault else None for fault in faults] == [
        FaultKind.SERVICE_UNAVAILABLE
    ] * 3
    assert state.stats()["keys"]["east"]["faults"] == {"service_unavailable": 3}


def test_stats_show_remaining_count() -> None:
    state = _state()
    state.set_fault("east", Fault(kind=FaultKind.RATE_LIMIT, count=3))
    state.take_fault("east", ALL_KINDS)

    fault = state.stats()["keys"]["east"]["fault"]

    assert fault["kind"] == "rate_limit"
    assert fault["remaining"] == 2


def test_record_counts_key_and_total() -> None:
    state = _state()

    state.record("east", 200)
    state.record("east", 429)
    state.record("east", Interruption.CONNECTION_RESET)
    state.record(None, 401)

    stats = state.stats()
    assert stats["keys"]["east"]["calls"] == 3
    assert stats["keys"]["east"]["successes"] == 1
    assert stats["keys"]["east"]["interrupted"] == {"connection_reset": 1, "client_disconnect": 0}
    assert stats["total"]["calls"] == 4
    assert stats["total"]["status_counts"] == {"200": 1, "401": 1, "429": 1}


def test_rate_limited_splits_quota_and_injected() -> None:
    state = _state(requests_per_minute=6)
    state.set_fault("east", Fault(kind=FaultKind.INSUFFICIENT_QUOTA, count=1))
    state.take_fault("east", ERROR_FAULT_KINDS)

    first = state.admit("east", 10)
    second = state.admit("east", 10)

    stats = state.stats()["keys"]["east"]
    assert first is None
    assert second is not None
    assert stats["rate_limited"] == {"quota": 1, "injected": 1}
    assert stats["requests"]["admitted"] == 1
    assert stats["tokens"]["admitted"] == 10


def test_reset_clears_windows_and_numbers() -> None:
    state = _state(requests_per_minute=6)
    state.next_completion_number()
    state.admit("east", 10)

    state.reset()

    assert state.next_completion_number() == 0
    assert state.admit("east", 10) is None
    assert state.stats()["keys"]["east"]["requests"]["admitted"] == 1


def test_latency_without_jitter_is_exact() -> None:
    config = SimulatorConfig(
        keys=[SimulatedKey(name="east", secret="s")],
        latency_s=0.25,
        latency_per_output_token_s=0.01,
    )
    state = SimulatorState(config)

    delay_s = state.draw_latency_s(completion_tokens=50)

    assert delay_s == pytest.approx(0.75)


def test_seeded_jitter_repeats_after_reset() -> None:
    config = SimulatorConfig(
        keys=[SimulatedKey(name="east", secret="s")], latency_s=1.0, latency_jitter=0.5, seed=3
    )
    state = SimulatorState(config)

    first = [state.draw_latency_s(0) for _ in range(20)]
    state.reset()
    second = [state.draw_latency_s(0) for _ in range(20)]

    assert first == second
    assert all(0.5 <= delay_s <= 1.5 for delay_s in first)
    assert len(set(first)) == 20


@pytest.mark.parametrize(
    ("retry_after_s", "retry_after_ms", "expected"),
    [(0.2, None, 1), (3.0, 500, 3), (None, 1500, 2), (None, None, None)],
)
def test_retry_after_rounds_up_to_seconds(
    retry_after_s: float | None, retry_after_ms: int | None, expected: int | None
) -> None:
    fault = Fault(
        kind=FaultKind.RATE_LIMIT, retry_after_s=retry_after_s, retry_after_ms=retry_after_ms
    )

    assert fault.retry_after_whole_s() == expected


@pytest.mark.parametrize(
    "fields",
    [
        {"count": 0},
        {"retry_after_s": -1},
        {"retry_after_s": float("inf")},
        {"x": 1},
        {"category": "spam"},
    ],
)
def test_invalid_fault_is_rejected(fields: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        Fault.model_validate({"kind": "rate_limit", **fields})
