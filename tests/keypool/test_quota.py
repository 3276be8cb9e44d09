"""Sliding windows and per-key quotas, on explicit clock values."""

from __future__ import annotations

import pytest

from microtopic.config import QuotaConfig
from microtopic.keypool import KeyQuota, SlidingWindow

NO_MARGIN = QuotaConfig(margin_s=0.0)


def test_window_admits_up_to_limit() -> None:
    window = SlidingWindow(limit=3, length_s=10.0)
    for moment in (0.0, 1.0, 2.0):
        window.charge(1, moment)

    assert not window.fits(1, 2.5)
    assert window.remaining(2.5) == 0


def test_window_frees_exactly_one_length_after_each_charge() -> None:
    window = SlidingWindow(limit=2, length_s=10.0)
    window.charge(1, 0.0)
    window.charge(1, 4.0)

    assert not window.fits(1, 9.999)
    assert window.fits(1, 10.0)
    assert window.used(10.0) == 1
    assert window.used(14.0) == 0


def test_fits_at_finds_the_earliest_room() -> None:
    window = SlidingWindow(limit=100, length_s=60.0)
    window.charge(40, 0.0)
    window.charge(30, 5.0)
    window.charge(30, 7.0)

    assert window.fits_at(10, 8.0) == 60.0
    assert window.fits_at(50, 8.0) == 65.0
    assert window.fits_at(0, 8.0) == 8.0
    assert window.fits_at(101, 8.0) is None


def test_refund_takes_back_one_charge() -> None:
    window = SlidingWindow(limit=2, length_s=10.0)
    window.charge(1, 1.0)
    window.charge(1, 2.0)

    window.refund(1, 2.0)

    assert window.used(3.0) == 1
    assert window.fits(1, 3.0)


def test_refund_of_expired_charge_changes_nothing() -> None:
    window = SlidingWindow(limit=2, length_s=10.0)
    window.charge(1, 1.0)
    window.charge(1, 12.0)

    window.refund(1, 1.0)

    assert window.used(12.0) == 1


@pytest.mark.parametrize(
    ("rpm", "tpm", "requests_limit", "tokens_limit"),
    [(600, 60_000, 100, 60_000), (60, 1_000, 10, 1_000), (3, 90, 1, 90)],
)
def test_quota_prorates_per_minute_limits(
    rpm: int, tpm: int, requests_limit: int, tokens_limit: int
) -> None:
    quota = KeyQuota(rpm, tpm, NO_MARGIN)

    snapshot = quota.snapshot(0.0)

    assert snapshot.requests_limit == requests_limit
    assert snapshot.tokens_limit == tokens_limit


def test_time_scale_shortens_windows_and_margin_lengthens_them() -> None:
    quota = KeyQuota(600, 60_000, QuotaConfig(time_scale=10.0, margin_s=0.05))

    assert quota.requests is not None
    assert quota.tokens is not None
    assert quota.requests.length_s == pytest.approx(1.05)
    assert quota.tokens.length_s == pytest.approx(6.05)


def test_tokens_bind_before_requests() -> None:
    quota = KeyQuota(600, 1_000, NO_MARGIN)
    quota.charge(600, 0.0)

    assert quota.fits(400, 1.0)
    assert not quota.fits(401, 1.0)
    assert quota.fits_at(401, 1.0) == 60.0
    assert quota.headroom(200, 1.0) == 2.0


def test_unlimited_quota_always_fits() -> None:
    quota = KeyQuota(None, None, NO_MARGIN)
    for moment in range(1000):
        quota.charge(10_000, float(moment) / 1000)

    assert not quota.limited
    assert quota.fits(10**9, 1.0)
    assert quota.fits_at(10**9, 1.0) == 1.0


def test_headers_reporting_other_use_are_charged() -> None:
    quota = KeyQuota(600, 60_000, NO_MARGIN)
    charge = quota.charge(1_000, 0.0)

    quota.learn(
        {"x-ratelimit-remaining-requests": "89", "x-ratelimit-remaining-tokens": "49000"},
        charge,
        0.2,
    )

    snapshot = quota.snapshot(0.3)
    assert snapshot.requests_used == 11
    assert snapshot.tokens_used == 11_000


def test_headers_ignore_our_later_calls() -> None:
    quota = KeyQuota(600, 60_000, NO_MARGIN)
    first = quota.charge(1_000, 0.0)
    quota.charge(1_000, 0.1)  # reached the provider before `first` did

    quota.learn(
        {"x-ratelimit-remaining-requests": "98", "x-ratelimit-remaining-tokens": "58000"},
        first,
        0.2,
    )

    snapshot = quota.snapshot(0.3)
    assert snapshot.requests_used == 2
    assert snapshot.tokens_used == 2_000


def test_malformed_headers_are_ignored() -> None:
    quota = KeyQuota(600, 60_000, NO_MARGIN)
    charge = quota.charge(1_000, 0.0)

    quota.learn({"x-ratelimit-remaining-requests": "lots"}, charge, 0.1)

    assert quota.snapshot(0.1).requests_used == 1


def test_restamp_dates_the_charge_from_sending() -> None:
    quota = KeyQuota(60, None, NO_MARGIN)
    charge = quota.charge(100, 0.0)

    moved = quota.restamp(charge, 4.0)

    assert moved.charged_at == 4.0
    assert quota.snapshot(13.0).requests_used == 1  # counted until 14, not 10
    assert quota.snapshot(14.0).requests_used == 0


def test_refusal_widens_the_windows_up_to_a_tenth() -> None:
    quota = KeyQuota(60, 6_000, NO_MARGIN)
    assert quota.requests is not None
    assert quota.tokens is not None

    quota.widen(0.3)
    assert quota.requests.length_s == pytest.approx(10.3)
    quota.widen(5.0)
    assert quota.requests.length_s == pytest.approx(11.0)
    assert quota.tokens.length_s == pytest.approx(65.3)


def test_successes_relax_a_widened_window() -> None:
    quota = KeyQuota(60, None, NO_MARGIN)
    assert quota.requests is not None
    quota.widen(1.0)

    for _ in range(300):
        quota.relax()

    assert 10.0 < quota.requests.length_s < 10.06
