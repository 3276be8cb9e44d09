"""The gateway against the simulator over HTTP: retries, failover, capacity and observers."""

from __future__ import annotations

import asyncio
import time

import pytest

from microtopic.config import GatewayConfig, RetryConfig, RetryStrategy
from microtopic.domain import TopicPlan
from microtopic.errors import (
    AllKeysFailedError,
    NoKeyAvailableError,
    ServiceAtCapacityError,
    UpstreamBadRequestError,
)
from microtopic.gateway import CallContext, CallEvent, Gateway, GatewayResult
from tests.harness import (
    FAST_RETRIES,
    KEY_NAMES,
    PLAN_REQUEST,
    RecordingObserver,
    SimulatorHarness,
)

FIRST = CallContext(request_id="req-1", step="plan")
RETRY = CallContext(request_id="req-1", step="plan", is_retry=True)


async def test_success_returns_key_and_usage(azure_simulator: SimulatorHarness) -> None:
    gateway = azure_simulator.gateway()

    reply = await gateway.complete(PLAN_REQUEST, FIRST)

    assert reply.key_name == "east"
    assert reply.provider == "azure"
    assert reply.deployment == "gpt-4o-mini"
    assert reply.attempts == 1
    assert reply.result.prompt_tokens > 0
    assert reply.result.completion_tokens > 0
    assert TopicPlan.model_validate_json(reply.result.content).microtopics
    assert await azure_simulator.calls("east") == 1


async def test_calls_rotate_over_keys(azure_simulator: SimulatorHarness) -> None:
    gateway = azure_simulator.gateway()

    replies = [await gateway.complete(PLAN_REQUEST, FIRST) for _ in range(6)]

    assert [reply.key_name for reply in replies] == [*KEY_NAMES, *KEY_NAMES]
    assert [await azure_simulator.calls(name) for name in KEY_NAMES] == [2, 2, 2]


async def test_revoked_key_leaves_rotation(azure_simulator: SimulatorHarness) -> None:
    gateway = azure_simulator.gateway()
    await azure_simulator.set_fault("east", "revoked")

    reply = await gateway.complete(PLAN_REQUEST, FIRST)
    later = [await gateway.complete(PLAN_REQUEST, FIRST) for _ in range(4)]

    east = gateway.pool.get("east")
    assert reply.key_name == "west"
    assert reply.attempts == 2
    assert not east.is_active
    assert east.error_count == 1
    assert east.disabled_reason == "the key was rejected (401)"
    assert {item.key_name for item in later} == {"west", "north"}
    assert await azure_simulator.calls("east") == 1


async def test_rate_limited_key_fails_over(azure_simulator: SimulatorHarness) -> None:
    gateway = azure_simulator.gateway()
    await azure_simulator.set_fault("east", "rate_limit", retry_after_ms=1500, count=1)

    reply = await gateway.complete(PLAN_REQUEST, FIRST)

    east = gateway.pool.get("east")
    assert reply.key_name == "west"
    assert reply.attempts == 2
    assert east.is_active
    assert east.error_count == 1
    assert east.last_error == "rate limited (429)"


async def test_single_key_retries_itself(azure_simulator: SimulatorHarness) -> None:
    gateway = azure_simulator.gateway([azure_simulator.azure_key("east")])
    await azure_simulator.set_fault("east", "rate_limit", retry_after_ms=100, count=2)
    started = time.perf_counter()

    reply = await gateway.complete(PLAN_REQUEST, FIRST)

    elapsed_s = time.perf_counter() - started
    assert reply.key_name == "east"
    assert reply.attempts == 3
    assert await azure_simulator.calls("east") == 3
    # Two cooldowns of exactly retry-after-ms (not the rounded-up retry-after: 1),
    # and no sleeps of the gateway's own.
    assert 0.2 <= elapsed_s < 0.9


async def test_all_keys_failing_names_each(azure_simulator: SimulatorHarness) -> None:
    gateway = azure_simulator.gateway()
    for name in KEY_NAMES:
        await azure_simulator.set_fault(name, "server_error")

    with pytest.raises(AllKeysFailedError) as caught:
        await gateway.complete(PLAN_REQUEST, FIRST)

    message = caught.value.message
    assert [failure.key_name for failure in caught.value.failures] == list(KEY_NAMES)
    for name in KEY_NAMES:
        assert f"{name}: server error (500)" in message
    for secret in azure_simulator.secrets.values():
        assert secret not in message
    assert gateway.capacity().failed_requests == 1


async def test_revoked_pool_lists_every_failure(azure_simulator: SimulatorHarness) -> None:
    gateway = azure_simulator.gateway()
    for name in KEY_NAMES:
        await azure_simulator.set_fault(name, "revoked")

    with pytest.raises(AllKeysFailedError) as caught:
        await gateway.complete(PLAN_REQUEST, RETRY)

    failures = caught.value.failures
    assert [failure.key_name for failure in failures] == list(KEY_NAMES)
    assert {failure.error_code for failure in failures} == {"upstream_auth_failed"}
    assert not any(key.is_active for key in gateway.pool.keys)
    assert await azure_simulator.calls() == 3


async def test_disabled_pool_raises_no_key(azure_simulator: SimulatorHarness) -> None:
    gateway = azure_simulator.gateway()
    for key in gateway.pool.keys:
        gateway.pool.disable(key.name, "the key was rejected (401)")

    with pytest.raises(NoKeyAvailableError) as caught:
        await gateway.complete(PLAN_REQUEST, FIRST)

    assert caught.value.inactive_count == 3
    assert await azure_simulator.calls() == 0


@pytest.mark.parametrize(
    ("context", "expected_calls"), [(FIRST, 3), (RETRY, 4)], ids=["first", "retry"]
)
async def test_attempts_are_retries_plus_one(
    azure_simulator: SimulatorHarness, context: CallContext, expected_calls: int
) -> None:
    gateway = azure_simulator.gateway()
    for name in KEY_NAMES:
        await azure_simulator.set_fault(name, "server_error")

    with pytest.raises(AllKeysFailedError) as caught:
        await gateway.complete(PLAN_REQUEST, context)

    assert len(caught.value.failures) == expected_calls
    assert await azure_simulator.calls() == expected_calls


async def test_retry_request_gets_retry_strategy(azure_simulator: SimulatorHarness) -> None:
    gateway = azure_simulator.gateway([azure_simulator.azure_key("east")])
    await azure_simulator.set_fault("east", "server_error", count=3)

    with pytest.raises(AllKeysFailedError) as caught:
        await gateway.complete(PLAN_REQUEST, FIRST)
    retried = await gateway.complete(PLAN_REQUEST, RETRY)

    assert len(caught.value.failures) == 3
    assert retried.attempts == 1
    assert await azure_simulator.calls("east") == 4


SLOW_RETRY = RetryConfig(
    first_request=RetryStrategy(retries=1, delay_s=0.3),
    retry_request=RetryStrategy(retries=1, delay_s=0.0),
)


async def test_same_key_is_retried_after_the_delay(azure_simulator: SimulatorHarness) -> None:
    gateway = azure_simulator.gateway(
        [azure_simulator.azure_key("east")], GatewayConfig(retry=SLOW_RETRY)
    )
    await azure_simulator.set_fault("east", "server_error", count=1)

    started = time.perf_counter()
    reply = await gateway.complete(PLAN_REQUEST, FIRST)
    elapsed_s = time.perf_counter() - started

    assert reply.attempts == 2
    assert elapsed_s >= 0.3


async def test_failover_to_another_key_does_not_wait(azure_simulator: SimulatorHarness) -> None:
    gateway = azure_simulator.gateway(config=GatewayConfig(retry=SLOW_RETRY))
    await azure_simulator.set_fault("east", "server_error", count=1)

    started = time.perf_counter()
    reply = await gateway.complete(PLAN_REQUEST, FIRST)
    elapsed_s = time.perf_counter() - started

    assert (reply.key_name, reply.attempts) == ("west", 2)
    assert elapsed_s < 0.3


async def test_observers_see_every_attempt(azure_simulator: SimulatorHarness) -> None:
    gateway = azure_simulator.gateway()
    observer = RecordingObserver()
    gateway.subscribe(observer)
    await azure_simulator.set_fault("east", "server_error", count=1)

    reply = await gateway.complete(PLAN_REQUEST, FIRST)

    assert len(observer.failed) == 1
    assert len(observer.completed) == 1
    failed, completed = observer.failed[0], observer.completed[0]
    assert (failed.key_name, failed.attempt) == ("east", 1)
    assert failed.outcome == "upstream_server_error"
    assert failed.reason == "server error (500)"
    assert failed.prompt_tokens == 0
    assert (completed.key_name, completed.attempt) == ("west", 2)
    assert completed.succeeded
    assert completed.context == FIRST
    assert completed.deployment == "gpt-4o-mini"
    assert completed.prompt_tokens == reply.result.prompt_tokens
    assert completed.completion_tokens == reply.result.completion_tokens
    assert completed.latency_ms > 0


async def test_raising_observer_is_ignored(azure_simulator: SimulatorHarness) -> None:
    class BrokenObserver(RecordingObserver):
        def on_call_completed(self, event: CallEvent) -> None:
            raise RuntimeError("observer bug")

    gateway = azure_simulator.gateway()
    gateway.subscribe(BrokenObserver())
    recorder = RecordingObserver()
    gateway.subscribe(recorder)

    reply = await gateway.complete(PLAN_REQUEST, FIRST)

    assert reply.attempts == 1
    assert len(recorder.completed) == 1


async def test_active_requests_stay_under_cap() -> None:
    async with SimulatorHarness.start(latency_s=0.1) as simulator:
        config = GatewayConfig(max_concurrent_requests=2, retry=FAST_RETRIES)
        gateway = simulator.gateway(config=config)

        calls = [asyncio.create_task(gateway.complete(PLAN_REQUEST, FIRST)) for _ in range(6)]
        peak = await _peak_active_requests(gateway, calls)
        capacity = gateway.capacity()

    assert peak == 2
    assert capacity.active_requests == 0
    assert capacity.available_slots == 2
    assert capacity.total_requests == 6
    assert capacity.failed_requests == 0


async def test_full_queue_raises_at_capacity_at_once() -> None:
    async with SimulatorHarness.start(latency_s=0.5) as simulator:
        config = GatewayConfig(max_concurrent_requests=1, max_queue_size=1, retry=FAST_RETRIES)
        gateway = simulator.gateway(config=config)
        running = asyncio.create_task(gateway.complete(PLAN_REQUEST, FIRST))
        queued = asyncio.create_task(gateway.complete(PLAN_REQUEST, FIRST))
        await asyncio.sleep(0.05)

        started = time.perf_counter()
        with pytest.raises(ServiceAtCapacityError) as caught:
            await gateway.complete(PLAN_REQUEST, FIRST)
        refused_after_s = time.perf_counter() - started
        replies = await asyncio.gather(running, queued)

    assert refused_after_s < 0.05
    assert caught.value.max_concurrent_requests == 1
    assert caught.value.retry_after_s >= 1.0
    assert "gateway.max_queue_size" in caught.value.message
    assert [reply.attempts for reply in replies] == [1, 1]


async def test_not_found_is_not_retried(azure_simulator: SimulatorHarness) -> None:
    keys = [azure_simulator.azure_key(name, deployment="gpt-missing") for name in KEY_NAMES]
    gateway = azure_simulator.gateway(keys)

    with pytest.raises(UpstreamBadRequestError) as caught:
        await gateway.complete(PLAN_REQUEST, RETRY)

    east = gateway.pool.get("east")
    assert caught.value.status_code == 404
    assert await azure_simulator.calls() == 1
    assert east.error_count == 1
    assert east.is_active


async def _peak_active_requests(gateway: Gateway, calls: list[asyncio.Task[GatewayResult]]) -> int:
    peak = 0
    while not all(call.done() for call in calls):
        peak = max(peak, gateway.capacity().active_requests)
        await asyncio.sleep(0.005)
    await asyncio.gather(*calls)
    return peak
