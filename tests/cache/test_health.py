"""Backend health: one warning per outage, a pause after a failure, and a note when it is back."""

from __future__ import annotations

import logging

import pytest

from microtopic.cache.health import BackendHealth
from microtopic.errors import RedisUnavailableError

ERROR = RedisUnavailableError("Could not read a cached topic: Redis failed.", backend="Redis")


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_failure_pauses_backend() -> None:
    clock = FakeClock()
    health = BackendHealth("Redis at x:6379", retry_after_s=5, clock=clock)

    health.record_failure(ERROR)
    paused = health.available
    clock.now += 5
    resumed = health.available

    assert paused is False
    assert resumed is True
    assert health.in_outage is True


def test_outage_logs_one_warning(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    health = BackendHealth("Redis at x:6379", retry_after_s=5, clock=clock)

    for _ in range(10):
        health.record_failure(ERROR)
        clock.now += 5

    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "Redis at x:6379" in warnings[0].getMessage()
    assert ERROR.message in warnings[0].getMessage()


def test_recovery_logs_once_and_rearms(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="microtopic.cache.health")
    health = BackendHealth("Redis at x:6379", retry_after_s=0)
    health.record_failure(ERROR)

    health.record_success()
    health.record_success()
    health.record_failure(ERROR)

    messages = [(r.levelno, r.getMessage()) for r in caplog.records]
    assert [level for level, _ in messages] == [logging.WARNING, logging.INFO, logging.WARNING]
    assert "back" in messages[1][1]
    assert health.in_outage is True


def test_success_without_outage_logs_nothing(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="microtopic.cache.health")
    health = BackendHealth("memory")

    health.record_success()

    assert caplog.records == []
    assert health.available is True
