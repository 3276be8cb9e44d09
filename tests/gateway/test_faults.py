"""Each upstream fault, handled by kind: exact upstream calls, which keys got them, and timing.

The faults are injected by the simulator over HTTP; the gateway reaches it through
the real openai SDK.
"""

from __future__ import annotations

import asyncio
import random
import time

import pytest

from microtopic import tokens
from microtopic.config import CircuitBreakerConfig, GatewayConfig
from microtopic.domain import TopicPlan
from microtopic.errors import (
    AllKeysFailedError,
    AllKeysRateLimitedError,
    ContentFilteredError,
    DeadlineExceededError,
    NoKeyAvailableError,
    TruncatedOutputError,
)
from microtopic.gateway import CallContext, Gateway
from microtopic.keypool import KeyState
from microtopic.pipeline.prompts import PromptLibrary
from microtopic.pipeline.structured import StructuredStep, run_step
from tests.harness import (
    FAST_RETRIES,
    KEY_NAMES,
    PLAN_REQUEST,
    RecordingObserver,
    SimulatorHarness,
)

CONTEXT = CallContext(request_id="req-faults", step="plan")


def deadline_in(seconds: float) -> CallContext:
    return CallContext(request_id="req-deadline", step="plan", deadline=time.monotonic() + seconds)


async def call_counts(simulator: SimulatorHarness) -> dict[str, int]:
    return {name: await simulator.calls(name) for name in KEY_NAMES}


def round_robin(simulator: SimulatorHarness, **settings: object) -> Gateway:
    config = GatewayConfig.model_validate(
        {"selection": "round_robin", "retry": FAST_RETRIES, **settings}
    )
    return simulator.gateway(config=config)


async def test_429_cools_the_key_for_exactly_retry_after(azure_simulator: SimulatorHarness) -> None:
    gateway = round_robin(azure_simulator)
    tokens.encoding()  # loaded once per process, about 0.5 s: not part of the failover
    # 2 s leaves room for the calls below on a busy machine; the cooldown must outlast them.
    await azure_simulator.set_fault("east", "rate_limit", retry_after_ms=2000, count=1)

    started = time.monotonic()
    reply = await gateway.complete(PLAN_REQUEST, CONTEXT)
    failover_s = time.monotonic() - started
    east = gateway.pool.get("east")
    cooling_s = gateway.pool.cooldown_remaining_s(east)
    during = [(await gateway.complete(PLAN_REQUEST, CONTEXT)).key_name for _ in range(4)]
    during_s = time.monotonic() - started
    await asyncio.sleep(max(0.0, 2.05 - during_s))
    after = [(await gateway.complete(PLAN_REQUEST, CONTEXT)).key_name for _ in range(3)]

    assert (reply.key_name, reply.attempts) == ("west", 2)
    assert failover_s < 0.5  # no sleep between the 429 and the next key
    assert 1.5 < cooling_s <= 2.0
    assert during_s < 2.0
    assert "east" not in during
    assert "east" in after
    assert east.errors_by_class == {"upstream_rate_limited": 1}
    assert await call_counts(azure_simulator) == {
        "east": 1 + after.count("east"),
        "west": 1 + during.count("west") + after.count("west"),
        "north": during.count("north") + after.count("north"),
    }


async def test_insufficient_quota_exhausts_the_key(azure_simulator: SimulatorHarness) -> None:
    gateway = round_robin(azure_simulator)
    await azure_simulator.set_fault("east", "insufficient_quota")

    replies = [await gateway.complete(PLAN_REQUEST, CONTEXT) for _ in range(5)]

    east = gateway.pool.get("east")
    assert east.state(time.monotonic()) is KeyState.EXHAUSTED
    assert east.exhausted_reason is not None
    assert "insufficient_quota" in east.exhausted_reason
    assert {reply.key_name for reply in replies} == {"west", "north"}
    assert await azure_simulator.calls("east") == 1


async def test_cooling_past_deadline_fails_fast(
    azure_simulator: SimulatorHarness,
) -> None:
    gateway = round_robin(azure_simulator)
    for name in KEY_NAMES:
        await azure_simulator.set_fault(name, "rate_limit", retry_after_ms=60_000, count=1)
    with pytest.raises(AllKeysRateLimitedError) as first:
        await gateway.complete(PLAN_REQUEST, CONTEXT)
    assert first.value.retry_after_s == pytest.approx(60.0, abs=1.0)
    assert "the first key returns in" in first.value.message

    started = time.monotonic()
    with pytest.raises(NoKeyAvailableError) as caught:
        await gateway.complete(PLAN_REQUEST, deadline_in(5.0))

    assert time.monotonic() - started < 0.1
    assert caught.value.retry_after_s == pytest.approx(60.0, abs=1.0)
    assert "3 keys: 3 cooling" in caught.value.message
    assert await azure_simulator.calls() == 3


async def test_all_keys_cooling_briefly_wait_for_the_first(
    azure_simulator: SimulatorHarness,
) -> None:
    gateway = round_robin(azure_simulator)
    for name in KEY_NAMES:
        await azure_simulator.set_fault(name, "rate_limit", retry_after_ms=400, count=1)
    with pytest.raises(AllKeysFailedError):
        await gateway.complete(PLAN_REQUEST, CONTEXT)

    started = time.monotonic()
    reply = await gateway.complete(PLAN_REQUEST, deadline_in(5.0))

    assert 0.2 < time.monotonic() - started < 2.0
    assert reply.attempts == 1
    assert await azure_simulator.calls() == 4


async def test_repeated_server_errors_open_the_circuit(azure_simulator: SimulatorHarness) -> None:
    breaker = CircuitBreakerConfig(failure_threshold=3, reset_s=0.5)
    gateway = azure_simulator.gateway(
        [azure_simulator.azure_key("east")],
        GatewayConfig(retry=FAST_RETRIES, circuit_breaker=breaker),
    )
    await azure_simulator.set_fault("east", "server_error", count=3)

    with pytest.raises(AllKeysFailedError):
        await gateway.complete(PLAN_REQUEST, CONTEXT)
    east = gateway.pool.get("east")
    state_after = east.state(time.monotonic())
    with pytest.raises(NoKeyAvailableError):
        await gateway.complete(PLAN_REQUEST, deadline_in(0.2))
    probe = await gateway.complete(PLAN_REQUEST, deadline_in(5.0))

    assert state_after is KeyState.CIRCUIT_OPEN
    assert probe.key_name == "east"
    assert east.state(time.monotonic()) is KeyState.ACTIVE
    assert await azure_simulator.calls("east") == 4


@pytest.mark.parametrize("kind", ["content_filter_prompt", "content_filter_completion"])
async def test_content_filter_is_raised_at_once(
    azure_simulator: SimulatorHarness, kind: str
) -> None:
    gateway = azure_simulator.gateway()
    await azure_simulator.set_fault("east", kind, category="violence", count=1)

    with pytest.raises(ContentFilteredError) as caught:
        await gateway.complete(PLAN_REQUEST, CONTEXT)

    assert caught.value.categories == ["violence"]
    assert await azure_simulator.calls() == 1
    assert gateway.pool.get("east").error_count == 0
    assert gateway.pool.get("east").state(time.monotonic()) is KeyState.ACTIVE


async def test_truncated_reply_is_retried_once_with_more_tokens(
    azure_simulator: SimulatorHarness,
) -> None:
    gateway = azure_simulator.gateway([azure_simulator.azure_key("east")])
    recorder = RecordingObserver()
    gateway.subscribe(recorder)
    await azure_simulator.set_fault("east", "truncated", count=1)

    reply = await gateway.complete(PLAN_REQUEST, CONTEXT)

    assert reply.attempts == 2
    assert TopicPlan.model_validate_json(reply.result.content)
    assert [event.outcome for event in recorder.events] == ["truncated_output", "success"]
    assert gateway.pool.get("east").error_count == 0
    assert await azure_simulator.calls("east") == 2


async def test_truncated_twice_is_a_clear_error(azure_simulator: SimulatorHarness) -> None:
    gateway = azure_simulator.gateway()
    for name in KEY_NAMES:
        await azure_simulator.set_fault(name, "truncated")

    with pytest.raises(TruncatedOutputError) as caught:
        await gateway.complete(PLAN_REQUEST, CONTEXT)

    assert caught.value.max_tokens == 800  # the retry's doubled budget
    assert await azure_simulator.calls() == 2


async def test_fenced_reply_is_unwrapped_without_a_retry(
    azure_simulator: SimulatorHarness,
) -> None:
    gateway = azure_simulator.gateway()
    await azure_simulator.set_fault("east", "fenced_json", count=1)

    step = StructuredStep("plan", TopicPlan, max_tokens=400)
    repair = PromptLibrary.load_default().get("repair")

    output = await run_step(
        gateway, step, PLAN_REQUEST.messages, repair_prompt=repair, context=CONTEXT
    )

    assert output.value.microtopics
    assert len(output.replies) == 1
    assert await azure_simulator.calls() == 1


@pytest.mark.parametrize("kind", ["hang", "connection_reset", "service_unavailable"])
async def test_broken_call_fails_over(azure_simulator: SimulatorHarness, kind: str) -> None:
    gateway = round_robin(azure_simulator, call_timeout_s=0.5)
    await azure_simulator.set_fault("east", kind, count=1)

    started = time.monotonic()
    reply = await gateway.complete(PLAN_REQUEST, CONTEXT)
    elapsed_s = time.monotonic() - started

    east = gateway.pool.get("east")
    assert (reply.key_name, reply.attempts) == ("west", 2)
    assert east.breaker.consecutive_failures == 1
    assert elapsed_s < 3.0
    if kind == "hang":
        assert elapsed_s >= 0.5
        assert east.errors_by_class == {"upstream_timeout": 1}
    assert await call_counts(azure_simulator) == {"east": 1, "west": 1, "north": 0}


async def test_deadline_cut_spares_key(
    azure_simulator: SimulatorHarness,
) -> None:
    gateway = azure_simulator.gateway([azure_simulator.azure_key("east")])
    await azure_simulator.set_fault("east", "hang", count=1)

    started = time.monotonic()
    with pytest.raises(DeadlineExceededError):
        await gateway.complete(PLAN_REQUEST, deadline_in(0.6))

    assert 0.5 < time.monotonic() - started < 2.0
    east = gateway.pool.get("east")
    assert east.error_count == 0
    assert east.breaker.consecutive_failures == 0


async def test_cancelling_100_calls_frees_the_gateway() -> None:
    async with SimulatorHarness.start(latency_s=0.2) as simulator:
        gateway = simulator.gateway(
            config=GatewayConfig(max_concurrent_requests=8, retry=FAST_RETRIES)
        )
        rng = random.Random(5)
        tasks = [asyncio.create_task(gateway.complete(PLAN_REQUEST, CONTEXT)) for _ in range(100)]
        for task in rng.sample(tasks, len(tasks)):
            await asyncio.sleep(rng.uniform(0.0, 0.01))
            task.cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        capacity = gateway.capacity()
        after = await gateway.complete(PLAN_REQUEST, CONTEXT)

    assert sum(isinstance(result, asyncio.CancelledError) for result in results) > 50
    assert (capacity.active_requests, capacity.queued_requests) == (0, 0)
    assert capacity.available_slots == 8
    assert all(key.active_calls == 0 for key in gateway.pool.keys)
    assert all(key.error_count == 0 for key in gateway.pool.keys)
    assert after.attempts == 1


async def test_cancelled_calls_are_cancelled_upstream(azure_simulator: SimulatorHarness) -> None:
    gateway = azure_simulator.gateway(config=GatewayConfig(retry=FAST_RETRIES))
    for name in KEY_NAMES:
        await azure_simulator.set_fault(name, "hang")
    tasks = [asyncio.create_task(gateway.complete(PLAN_REQUEST, CONTEXT)) for _ in range(6)]
    await asyncio.sleep(0.5)  # every call is now held open by the simulator

    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    disconnects = 0
    for _ in range(50):
        disconnects = (await azure_simulator.stats())["total"]["interrupted"]["client_disconnect"]
        if disconnects == 6:
            break
        await asyncio.sleep(0.05)

    assert disconnects == 6
    assert gateway.capacity().active_requests == 0
    assert all(key.breaker.consecutive_failures == 0 for key in gateway.pool.keys)
