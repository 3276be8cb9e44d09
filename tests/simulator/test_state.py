"""Faults and call counts kept by `SimulatorState`."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from microtopic.simulator import Fault, FaultKind
from microtopic.simulator.state import SimulatorState


def test_counted_fault_expires_after_count() -> None:
    state = SimulatorState(["east"])
    state.set_fault("east", Fault(kind=FaultKind.SERVER_ERROR, count=2))

    faults = [state.take_fault("east") for _ in range(3)]

    assert faults[0] is not None
    assert faults[1] is not None
    assert faults[2] is None


def test_uncounted_fault_stays() -> None:
    state = SimulatorState(["east"])
    state.set_fault("east", Fault(kind=FaultKind.REVOKED))

    faults = [state.take_fault("east") for _ in range(5)]

    assert all(fault is not None for fault in faults)


def test_stats_show_remaining_count() -> None:
    state = SimulatorState(["east"])
    state.set_fault("east", Fault(kind=FaultKind.RATE_LIMIT, count=3))
    state.take_fault("east")

    fault = state.stats()["keys"]["east"]["fault"]

    assert fault["kind"] == "rate_limit"
    assert fault["remaining"] == 2


def test_record_counts_key_and_total() -> None:
    state = SimulatorState(["east"])

    state.record("east", 200)
    state.record("east", 429)
    state.record(None, 401)

    stats = state.stats()
    assert stats["keys"]["east"]["calls"] == 2
    assert stats["keys"]["east"]["successes"] == 1
    assert stats["total"]["calls"] == 3
    assert stats["total"]["status_counts"] == {"200": 1, "401": 1, "429": 1}


def test_reset_restarts_completion_numbers() -> None:
    state = SimulatorState(["east"])
    state.next_completion_number()

    state.reset()

    assert state.next_completion_number() == 0


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
    "fields", [{"count": 0}, {"retry_after_s": -1}, {"retry_after_s": float("inf")}, {"x": 1}]
)
def test_invalid_fault_is_rejected(fields: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        Fault.model_validate({"kind": "rate_limit", **fields})
