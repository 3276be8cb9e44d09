"""Sliding windows, per-key quotas and the simulated clock of the quota module."""

from __future__ import annotations

import pytest

from microtopic.simulator.quota import (
    KeyQuota,
    QuotaKind,
    SimulatedClock,
    SlidingWindow,
    request_limit,
    token_limit,
    whole_ms,
)
from tests.simulator.support import ManualClock


@pytest.mark.parametrize(
    ("requests_per_minute", "window_s", "expected"),
    [(60, 10, 10), (600, 10, 100), (7, 10, 1), (5, 10, 1), (1, 60, 1), (90, 1, 1), (120, 1, 2)],
)
def test_request_limit_per_window(requests_per_minute: int, window_s: int, expected: int) -> None:
    assert request_limit(requests_per_minute, window_s) == expected


@pytest.mark.parametrize(
    ("tokens_per_minute", "window_s", "expected"),
    [(1000, 60, 1000), (1000, 10, 166), (30, 1, 0), (90_000, 60, 90_000)],
)
def test_token_limit_per_window(tokens_per_minute: int, window_s: int, expected: int) -> None:
    assert token_limit(tokens_per_minute, window_s) == expected


def test_full_window_waits_for_oldest() -> None:
    window = SlidingWindow(window_s=10, limit=3)
    for now_s in (0.0, 1.0, 2.0):
        window.add(now_s, 1)

    assert window.wait_s(5.0, 1) == 5.0
    assert window.remaining(5.0) == 0
    assert window.wait_s(10.0, 1) == 0.0
    assert window.remaining(10.0) == 1


def test_entry_leaves_window_exactly_at_its_end() -> None:
    window = SlidingWindow(window_s=10, limit=None)
    window.add(0.0, 1)
    window.add(4.0, 1)

    assert window.used(9.999) == 2
    assert window.used(10.0) == 1
    assert window.used(14.0) == 0


def test_token_wait_finds_freeing_entry() -> None:
    window = SlidingWindow(window_s=60, limit=100)
    window.add(0.0, 40)
    window.add(10.0, 30)
    window.add(20.0, 30)

    # Fitting 50 more needs 50 to leave. The 40 of t=0 are not enough, with t=10 it is 70.
    assert window.wait_s(30.0, 50) == 40.0
    assert window.wait_s(30.0, 40) == 30.0
    assert window.wait_s(30.0, 0) == 0.0


def test_amount_over_limit_never_fits() -> None:
    window = SlidingWindow(window_s=60, limit=100)

    assert window.wait_s(0.0, 101) is None
    assert window.wait_s(0.0, 100) == 0.0


def test_unlimited_window_tracks_without_limit() -> None:
    window = SlidingWindow(window_s=10, limit=None)
    window.add(0.0, 500)

    assert window.wait_s(0.0, 10**9) == 0.0
    assert window.remaining(0.0) is None
    assert window.peak == 500


def test_peak_is_max_in_one_window() -> None:
    window = SlidingWindow(window_s=10, limit=None)
    for now_s, amount in ((0.0, 3), (5.0, 4), (12.0, 1), (14.0, 1), (15.0, 6)):
        window.add(now_s, amount)

    # The window ending at 5 holds 7, and the one ending at 15 holds 8 (from 12, 14, 15).
    assert window.peak == 8
    assert window.admitted == 15


def test_window_stays_correct_after_compaction() -> None:
    window = SlidingWindow(window_s=10, limit=50)
    for step in range(5000):
        window.add(step * 0.5, 1)

    now_s = 4999 * 0.5
    assert window.used(now_s) == 20
    assert window.peak == 20
    assert window.admitted == 5000
    assert window.wait_s(now_s, 31) == pytest.approx(0.5)


def test_admit_charges_both_windows() -> None:
    quota = KeyQuota(SlidingWindow(10, 2), SlidingWindow(60, 1000))

    rejection = quota.admit(0.0, 300)

    assert rejection is None
    assert quota.requests.admitted == 1
    assert quota.tokens.admitted == 300


def test_rejected_request_is_not_charged() -> None:
    quota = KeyQuota(SlidingWindow(10, 2), SlidingWindow(60, 1000))
    quota.admit(0.0, 600)

    rejection = quota.admit(1.0, 600)

    assert rejection is not None
    assert rejection.exceeded == (QuotaKind.TOKENS,)
    assert rejection.wait_s == 59.0
    assert quota.requests.admitted == 1
    assert quota.tokens.admitted == 600


def test_rejection_names_both_quotas() -> None:
    quota = KeyQuota(SlidingWindow(10, 1), SlidingWindow(60, 1000))
    quota.admit(0.0, 900)

    rejection = quota.admit(2.0, 200)

    assert rejection is not None
    assert rejection.exceeded == (QuotaKind.REQUESTS, QuotaKind.TOKENS)
    assert rejection.wait_s == 58.0


def test_charge_over_token_limit_has_no_wait() -> None:
    quota = KeyQuota(SlidingWindow(10, None), SlidingWindow(60, 1000))

    rejection = quota.admit(0.0, 1001)

    assert rejection is not None
    assert rejection.wait_s is None
    assert rejection.charge_tokens == 1001
    assert quota.tokens.admitted == 0


def test_headers_name_only_limited_quotas() -> None:
    quota = KeyQuota(SlidingWindow(10, 5), SlidingWindow(60, None))
    quota.admit(0.0, 100)

    headers = quota.rate_limit_headers(0.0)

    assert headers == {"x-ratelimit-limit-requests": "5", "x-ratelimit-remaining-requests": "4"}


def test_clock_scales_real_seconds() -> None:
    real = ManualClock(start_s=500.0)
    clock = SimulatedClock(time_scale=10, monotonic=real)

    real.advance(1.5)

    assert clock.now_s() == 15.0
    assert clock.real_s(15.0) == 1.5


@pytest.mark.parametrize(
    ("seconds", "expected"), [(0.3, 300), (1 / 6, 167), (0.0001, 1), (2.0, 2000), (0.0, 0)]
)
def test_whole_ms_rounds_up(seconds: float, expected: int) -> None:
    assert whole_ms(seconds) == expected
