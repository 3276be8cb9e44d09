"""Fault kinds, fault rates and the random draw of the faults module."""

from __future__ import annotations

import random

import pytest

from microtopic.simulator import FaultKind
from microtopic.simulator.faults import (
    ERROR_FAULT_KINDS,
    REPLY_FAULT_KINDS,
    draw_fault_kind,
    validate_fault_rates,
)


class _FixedRandom(random.Random):
    """Returns the same number from every `random()` call, and counts the calls."""

    def __init__(self, value: float) -> None:
        super().__init__(0)
        self.value = value
        self.draws = 0

    def random(self) -> float:
        self.draws += 1
        return self.value


def test_kinds_split_into_error_and_reply() -> None:
    every_kind = frozenset(FaultKind) - {FaultKind.NONE}
    reply_kinds = {"content_filter_completion", "truncated", "fenced_json"}

    assert every_kind == ERROR_FAULT_KINDS | REPLY_FAULT_KINDS
    assert not ERROR_FAULT_KINDS & REPLY_FAULT_KINDS
    assert reply_kinds == REPLY_FAULT_KINDS


@pytest.mark.parametrize(
    ("roll", "expected"),
    [
        (0.0, FaultKind.SERVER_ERROR),
        (0.019, FaultKind.SERVER_ERROR),
        (0.021, FaultKind.SERVICE_UNAVAILABLE),
        (0.119, FaultKind.SERVICE_UNAVAILABLE),
        (0.121, None),
    ],
)
def test_draw_picks_kind_by_cumulative_rate(roll: float, expected: FaultKind | None) -> None:
    rates = {FaultKind.SERVICE_UNAVAILABLE: 0.1, FaultKind.SERVER_ERROR: 0.02}

    kind = draw_fault_kind(rates, ERROR_FAULT_KINDS, _FixedRandom(roll))

    assert kind == expected


def test_draw_without_rates_uses_no_number() -> None:
    rng = _FixedRandom(0.0)
    rates = {FaultKind.TRUNCATED: 0.5}

    kind = draw_fault_kind(rates, ERROR_FAULT_KINDS, rng)

    assert kind is None
    assert rng.draws == 0


def test_draw_frequency_matches_rate() -> None:
    rng = random.Random(11)
    rates = {FaultKind.HANG: 0.2}

    drawn = [draw_fault_kind(rates, ERROR_FAULT_KINDS, rng) for _ in range(10_000)]

    assert 1800 <= drawn.count(FaultKind.HANG) <= 2200


def test_rates_over_one_are_rejected() -> None:
    rates = {FaultKind.HANG: 0.6, FaultKind.TRUNCATED: 0.5}

    with pytest.raises(ValueError, match=r"add up to 1\.1"):
        validate_fault_rates(rates)


def test_rate_for_none_is_rejected() -> None:
    with pytest.raises(ValueError, match="`none`"):
        validate_fault_rates({FaultKind.NONE: 0.1})
