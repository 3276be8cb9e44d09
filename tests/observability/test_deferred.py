"""Call events handed to other observers on the event loop's next turn."""

from __future__ import annotations

import asyncio
import logging

import pytest

from microtopic.gateway import CallEvent
from microtopic.observability import DeferredObserver
from tests.harness import RecordingObserver
from tests.observability.support import call_event


class FailingObserver:
    def on_call_completed(self, event: CallEvent) -> None:
        raise RuntimeError("observer bug")

    def on_call_failed(self, event: CallEvent) -> None:
        raise RuntimeError("observer bug")


async def test_events_arrive_on_next_turn() -> None:
    inner = RecordingObserver()
    deferred = DeferredObserver([inner])

    deferred.on_call_completed(call_event("east", latency_ms=100.0))
    deferred.on_call_failed(call_event("west", "upstream_server_error", latency_ms=50.0))
    before = list(inner.events)
    await asyncio.sleep(0)

    assert before == []
    assert [event.key_name for event in inner.completed] == ["east"]
    assert [event.key_name for event in inner.failed] == ["west"]
    assert [event.key_name for event in inner.events] == ["east", "west"]


async def test_every_observer_gets_each_event() -> None:
    first, second = RecordingObserver(), RecordingObserver()
    deferred = DeferredObserver([first, second])

    for latency_ms in (1.0, 2.0, 3.0):
        deferred.on_call_completed(call_event("east", latency_ms=latency_ms))
    await asyncio.sleep(0)

    assert [event.latency_ms for event in first.completed] == [1.0, 2.0, 3.0]
    assert [event.latency_ms for event in second.completed] == [1.0, 2.0, 3.0]


async def test_later_events_get_a_new_turn() -> None:
    inner = RecordingObserver()
    deferred = DeferredObserver([inner])
    deferred.on_call_completed(call_event("east", latency_ms=1.0))
    await asyncio.sleep(0)

    deferred.on_call_completed(call_event("north", latency_ms=2.0))
    await asyncio.sleep(0)

    assert [event.key_name for event in inner.completed] == ["east", "north"]


def test_without_loop_events_pass_at_once() -> None:
    inner = RecordingObserver()
    deferred = DeferredObserver([inner])

    deferred.on_call_completed(call_event("east", latency_ms=1.0))

    assert len(inner.completed) == 1


async def test_flush_passes_events_now() -> None:
    inner = RecordingObserver()
    deferred = DeferredObserver([inner])
    deferred.on_call_completed(call_event("east", latency_ms=1.0))

    deferred.flush()

    assert len(inner.completed) == 1
    await asyncio.sleep(0)
    assert len(inner.completed) == 1


async def test_failing_observer_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    inner = RecordingObserver()
    deferred = DeferredObserver([FailingObserver(), inner])

    with caplog.at_level(logging.ERROR, logger="microtopic.observability.deferred"):
        deferred.on_call_completed(call_event("east", latency_ms=1.0))
        await asyncio.sleep(0)

    assert len(inner.completed) == 1
    assert "call observer" in caplog.text
    assert "observer bug" in caplog.text
