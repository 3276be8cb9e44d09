"""The gateway's part of a request's trace: key selection, queue waits and each attempt."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from microtopic.config import GatewayConfig
from microtopic.errors import NoKeyAvailableError
from microtopic.gateway import CallContext
from microtopic.observability.tracing import SpanKind, Trace, current_trace, span
from tests.harness import FAST_RETRIES, PLAN_REQUEST, RecordingObserver, SimulatorHarness

CONTEXT = CallContext(request_id="req-1", step="plan")


@pytest.fixture
def trace() -> Iterator[Trace]:
    """A trace made current for the test, as the generation service makes one."""
    trace = Trace()
    token = current_trace.set(trace)
    yield trace
    current_trace.reset(token)


async def test_failover_shows_each_attempt_and_key(
    azure_simulator: SimulatorHarness, trace: Trace
) -> None:
    gateway = azure_simulator.gateway()
    observer = RecordingObserver()
    gateway.subscribe(observer)
    await azure_simulator.set_fault("east", "revoked")

    with span("plan", SpanKind.STEP) as step:
        await gateway.complete(PLAN_REQUEST, CONTEXT)

    selections = [s for s in trace.spans if s.kind is SpanKind.KEY_SELECTION]
    assert [s.attributes["attempt"] for s in selections] == [1, 2]
    assert [s.attributes["key"] for s in selections] == ["east", "west"]
    assert all(s.parent_id == step.span_id for s in selections)
    failed, served = observer.events
    assert (failed.key_name, failed.outcome) == ("east", "upstream_auth_failed")
    assert (served.key_name, served.outcome) == ("west", "success")
    assert failed.parent_id == served.parent_id == step.span_id
    ids = {s.span_id for s in trace.spans}
    assert failed.span_id not in ids
    assert served.span_id not in ids
    assert failed.span_id != served.span_id


async def test_queued_attempt_shows_its_wait(trace: Trace) -> None:
    async with SimulatorHarness.start(latency_s=0.2) as simulator:
        config = GatewayConfig(max_concurrent_requests=1, retry=FAST_RETRIES)
        gateway = simulator.gateway(config=config)

        await asyncio.gather(*(gateway.complete(PLAN_REQUEST, CONTEXT) for _ in range(2)))

    (wait,) = [s for s in trace.spans if s.kind is SpanKind.QUEUE]
    selection = next(s for s in trace.spans if s.span_id == wait.parent_id)
    assert selection.kind is SpanKind.KEY_SELECTION
    assert wait.duration_ms >= 150
    assert selection.start <= wait.start <= wait.end <= selection.end


async def test_failed_selection_records_error(
    azure_simulator: SimulatorHarness, trace: Trace
) -> None:
    gateway = azure_simulator.gateway()
    for name in ("east", "west", "north"):
        gateway.pool.disable(name, "revoked for the test")

    with pytest.raises(NoKeyAvailableError):
        await gateway.complete(PLAN_REQUEST, CONTEXT)

    (selection,) = trace.spans
    assert selection.kind is SpanKind.KEY_SELECTION
    assert selection.attributes["error"] == "no_key_available"
    assert "key" not in selection.attributes


async def test_calls_without_trace_have_no_span_ids(azure_simulator: SimulatorHarness) -> None:
    gateway = azure_simulator.gateway()
    observer = RecordingObserver()
    gateway.subscribe(observer)

    await gateway.complete(PLAN_REQUEST, CONTEXT)

    (event,) = observer.events
    assert event.span_id is None
    assert event.parent_id is None
