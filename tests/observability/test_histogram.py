"""Log-spaced duration histograms: bounded bins, exact extremes, percentiles within 2%."""

from __future__ import annotations

import math

import pytest

from microtopic.observability.histogram import (
    BIN_COUNT,
    MAX_MS,
    MIN_MS,
    Histogram,
    bin_middle_ms,
    bin_of,
)


def histogram_of(values: list[float], *, errors: int = 0) -> Histogram:
    histogram = Histogram()
    for index, value in enumerate(values):
        histogram.add(value, ok=index >= errors)
    return histogram


@pytest.mark.parametrize("duration_ms", [0.0015, 0.37, 1.0, 12.5, 980.0, 61_234.0, 3.6e6])
def test_bin_middle_is_within_two_percent(duration_ms: float) -> None:
    middle = bin_middle_ms(bin_of(duration_ms))

    assert middle == pytest.approx(duration_ms, rel=0.021)


@pytest.mark.parametrize("duration_ms", [-5.0, 0.0, MIN_MS / 10, MAX_MS, MAX_MS * 1000, math.inf])
def test_out_of_range_durations_stay_in_bounds(duration_ms: float) -> None:
    index = bin_of(duration_ms)

    assert 0 <= index < BIN_COUNT


def test_bin_count_is_small() -> None:
    assert BIN_COUNT < 700


@pytest.mark.parametrize(
    ("values", "rank", "expected"),
    [
        ([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0], 50, 5.0),
        ([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0], 90, 9.0),
        ([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0], 95, 10.0),
        ([15.0, 20.0, 35.0, 40.0, 50.0], 30, 20.0),
        ([15.0, 20.0, 35.0, 40.0, 50.0], 40, 20.0),
        ([15.0, 20.0, 35.0, 40.0, 50.0], 0, 15.0),
        ([15.0, 20.0, 35.0, 40.0, 50.0], 100, 50.0),
        ([7.0], 95, 7.0),
    ],
)
def test_percentile_uses_nearest_rank(values: list[float], rank: float, expected: float) -> None:
    histogram = histogram_of(values)

    result = histogram.percentile(rank)

    assert result == pytest.approx(expected, rel=0.021)


def test_percentiles_stay_within_extremes() -> None:
    histogram = histogram_of([100.0, 100.5, 101.0])

    assert histogram.min_ms <= histogram.percentile(1) <= histogram.max_ms
    assert histogram.percentile(100) == 101.0


def test_large_sample_percentiles_are_close() -> None:
    values = [float(value) for value in range(1, 10_001)]
    histogram = histogram_of(values)

    assert histogram.percentile(50) == pytest.approx(5000.0, rel=0.021)
    assert histogram.percentile(95) == pytest.approx(9500.0, rel=0.021)
    assert histogram.percentile(99) == pytest.approx(9900.0, rel=0.021)
    assert len(histogram.bins) < BIN_COUNT


def test_totals_are_exact() -> None:
    histogram = histogram_of([40.0, 10.0, 30.0, 20.0], errors=1)

    assert histogram.count == 4
    assert histogram.error_count == 1
    assert histogram.mean_ms == 25.0
    assert histogram.min_ms == 10.0
    assert histogram.max_ms == 40.0


def test_merge_adds_both() -> None:
    first = histogram_of([1.0, 2.0], errors=1)
    second = histogram_of([300.0])

    first.merge(second)

    assert first.count == 3
    assert first.error_count == 1
    assert first.total_ms == 303.0
    assert first.min_ms == 1.0
    assert first.max_ms == 300.0
    assert first.percentile(100) == 300.0


def test_empty_histogram_reads_zero() -> None:
    histogram = Histogram()

    assert histogram.percentile(50) == 0.0
    assert histogram.mean_ms == 0.0
