from __future__ import annotations

from datetime import datetime

import pytest

from microtopic.storage import SUCCESS_OUTCOME, StepRecord
from tests.storage.builders import T0, at, make_call


def test_step_duration_rounds_to_milliseconds() -> None:
    step = StepRecord(name="planner", started_at=T0, finished_at=at(1.2346))

    assert step.duration_ms == 1235


def test_step_duration_of_whole_seconds() -> None:
    step = StepRecord(name="writer:2", started_at=at(1), finished_at=at(3.5))

    assert step.duration_ms == 2500


def test_step_rejects_naive_datetime() -> None:
    with pytest.raises(ValueError, match=r"StepRecord.finished_at must be a timezone-aware"):
        StepRecord(name="planner", started_at=T0, finished_at=datetime(2025, 3, 14))


def test_call_rejects_naive_started_at() -> None:
    with pytest.raises(ValueError, match=r"LlmCallRecord.started_at must be a timezone-aware"):
        make_call(started_at=datetime(2025, 3, 14))


def test_call_succeeded_only_on_success_outcome() -> None:
    succeeded = make_call(outcome=SUCCESS_OUTCOME)
    failed = make_call(outcome="upstream_rate_limited")

    assert succeeded.succeeded
    assert not failed.succeeded
