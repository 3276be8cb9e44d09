"""The content cache in the real service: the pipeline over HTTP against the Azure simulator.

Each test builds `Runtime`s as the app does, on a SQLite file of its own, and counts
the chat calls the simulator received.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from microtopic.config import CacheConfig, Settings
from microtopic.domain import GenerationRequest
from microtopic.errors import ContentFilteredError, TruncatedOutputError
from microtopic.runtime import Runtime
from microtopic.service import GenerationOutcome
from microtopic.storage import RequestStatus
from tests.harness import FAST_GATEWAY, KEY_NAMES, SimulatorHarness
from tests.observability.test_metrics import value

REQUEST = GenerationRequest(
    course_id="math-101", subject_name="Mathematics", topic_name="Linear equations"
)

StartRuntime = Callable[..., Awaitable[Runtime]]


@pytest.fixture
async def slow_simulator() -> AsyncIterator[SimulatorHarness]:
    """A simulator whose every reply takes 0.5 s, so that a generation lasts over 1.5 s."""
    async with SimulatorHarness.start(latency_s=0.5) as harness:
        yield harness


@pytest.fixture
async def start_runtime(tmp_path: Path) -> AsyncIterator[StartRuntime]:
    """Start a runtime over the simulator's keys; each gets a SQLite file of its own."""
    runtimes: list[Runtime] = []

    async def start(simulator: SimulatorHarness, **settings: Any) -> Runtime:
        database = tmp_path / f"runtime-{len(runtimes)}.db"
        runtime = await Runtime.start(
            Settings(
                keys=[simulator.azure_key(name) for name in KEY_NAMES],
                gateway=FAST_GATEWAY,
                database_url=f"sqlite+aiosqlite:///{database}",
                **settings,
            )
        )
        runtimes.append(runtime)
        return runtime

    yield start
    for runtime in runtimes:
        await runtime.aclose()


def topic_providers(runtime: Runtime) -> Counter[str]:
    """Return how many stored topics each provider value has."""
    path = runtime.settings.database_url.removeprefix("sqlite+aiosqlite:///")
    with closing(sqlite3.connect(path)) as connection:
        rows = connection.execute("SELECT provider FROM generated_topics").fetchall()
    return Counter(provider for (provider,) in rows)


def generated(outcomes: list[GenerationOutcome]) -> list[GenerationOutcome]:
    return [outcome for outcome in outcomes if not outcome.cached]


async def test_fifty_identical_requests_generate_once(
    slow_simulator: SimulatorHarness, start_runtime: StartRuntime
) -> None:
    runtime = await start_runtime(slow_simulator)

    outcomes = await asyncio.gather(*(runtime.service.generate(REQUEST) for _ in range(50)))

    [leader] = generated(outcomes)
    assert leader.llm_calls > 0
    assert await slow_simulator.calls() == leader.llm_calls
    assert all(outcome.topic == leader.topic for outcome in outcomes)
    assert len({outcome.request_id for outcome in outcomes}) == 50
    assert topic_providers(runtime) == Counter({"azure": 1, "cache": 49})


async def test_hit_is_stored_as_succeeded_without_calls(
    azure_simulator: SimulatorHarness, start_runtime: StartRuntime
) -> None:
    runtime = await start_runtime(azure_simulator)
    first = await runtime.service.generate(REQUEST)
    calls_before = await azure_simulator.calls()

    hit = await runtime.service.generate(REQUEST)

    assert hit.cached is True
    assert await azure_simulator.calls() == calls_before
    assert hit.topic == first.topic
    assert hit.llm_calls == 0
    assert hit.keys_used == []
    assert hit.tokens.total_tokens == 0
    assert hit.models == first.models
    assert hit.prompt_version == first.prompt_version
    assert [step.name for step in hit.steps] == ["cache"]
    stored = await runtime.store.get_request(hit.request_id)
    assert stored.status is RequestStatus.SUCCEEDED
    assert stored.calls == []
    assert stored.topic == first.topic
    assert topic_providers(runtime)["cache"] == 1
    assert any(op.operation == "cache_hit" for op in runtime.stats.snapshot())
    assert value(runtime.metrics, "microtopic_cache_lookups_total", result="hit") == 1
    assert value(runtime.metrics, "microtopic_cache_lookups_total", result="miss") == 1


async def test_hit_returns_request_own_names(
    azure_simulator: SimulatorHarness, start_runtime: StartRuntime
) -> None:
    runtime = await start_runtime(azure_simulator)
    await runtime.service.generate(REQUEST)
    request = REQUEST.model_copy(
        update={"subject_name": "MATHEMATICS", "topic_name": "linear  equations"}
    )

    hit = await runtime.service.generate(request)

    assert hit.cached is True
    assert hit.topic.subject_name == "MATHEMATICS"
    assert hit.topic.topic_name == "linear  equations"


async def test_retry_generates_again_and_replaces_entry(
    azure_simulator: SimulatorHarness, start_runtime: StartRuntime
) -> None:
    runtime = await start_runtime(azure_simulator)
    await runtime.service.generate(REQUEST)

    retried = await runtime.service.generate(REQUEST.model_copy(update={"is_retry": True}))
    later = await runtime.service.generate(REQUEST)

    assert retried.cached is False
    assert retried.llm_calls > 0
    assert later.cached is True
    assert runtime.cache is not None
    entry = await runtime.cache.read(runtime.cache.key_for(REQUEST))
    assert entry is not None
    assert entry.request_id == retried.request_id


async def test_filtered_generation_is_not_cached(
    azure_simulator: SimulatorHarness, start_runtime: StartRuntime
) -> None:
    runtime = await start_runtime(azure_simulator)
    for name in KEY_NAMES:
        await azure_simulator.set_fault(name, "content_filter_completion", category="violence")
    with pytest.raises(ContentFilteredError):
        await runtime.service.generate(REQUEST)
    for name in KEY_NAMES:
        await azure_simulator.set_fault(name, "none")

    outcome = await runtime.service.generate(REQUEST)

    assert outcome.cached is False
    assert outcome.llm_calls > 0


async def test_truncated_generation_is_not_cached(
    azure_simulator: SimulatorHarness, start_runtime: StartRuntime
) -> None:
    runtime = await start_runtime(azure_simulator)
    for name in KEY_NAMES:
        await azure_simulator.set_fault(name, "truncated")
    with pytest.raises(TruncatedOutputError):
        await runtime.service.generate(REQUEST)
    assert runtime.cache is not None

    entry = await runtime.cache.read(runtime.cache.key_for(REQUEST))

    assert entry is None


async def test_leader_error_reaches_followers_once(
    slow_simulator: SimulatorHarness, start_runtime: StartRuntime
) -> None:
    runtime = await start_runtime(slow_simulator)
    for name in KEY_NAMES:
        await slow_simulator.set_fault(name, "content_filter_completion", category="hate")
    leader = asyncio.create_task(runtime.service.generate(REQUEST))
    await asyncio.sleep(0.05)  # The leader's first reply takes 0.5 s.

    followers = [runtime.service.generate(REQUEST) for _ in range(4)]
    outcomes = await asyncio.gather(leader, *followers, return_exceptions=True)
    calls = await slow_simulator.calls()
    for name in KEY_NAMES:
        await slow_simulator.set_fault(name, "none")
    later = await runtime.service.generate(REQUEST)

    assert all(isinstance(outcome, ContentFilteredError) for outcome in outcomes)
    # The first reply is withheld by the filter, and the followers share that error.
    assert calls == 1
    assert later.cached is False


async def test_cancelled_follower_leaves_leader_running(
    slow_simulator: SimulatorHarness, start_runtime: StartRuntime
) -> None:
    runtime = await start_runtime(slow_simulator)
    leader = asyncio.create_task(runtime.service.generate(REQUEST, request_id="leader"))
    await asyncio.sleep(0.3)
    follower = asyncio.create_task(runtime.service.generate(REQUEST, request_id="follower"))
    await asyncio.sleep(0.3)

    follower.cancel()
    with pytest.raises(asyncio.CancelledError):
        await follower
    outcome = await leader

    assert outcome.cached is False
    assert (await runtime.store.get_request("follower")).error_code == "cancelled"
    assert (await runtime.store.get_request("leader")).status is RequestStatus.SUCCEEDED
    assert await slow_simulator.calls() == outcome.llm_calls


async def test_cancelled_leader_hands_over_to_follower(
    slow_simulator: SimulatorHarness, start_runtime: StartRuntime
) -> None:
    runtime = await start_runtime(slow_simulator)
    leader = asyncio.create_task(runtime.service.generate(REQUEST, request_id="leader"))
    await asyncio.sleep(0.3)
    follower = asyncio.create_task(runtime.service.generate(REQUEST, request_id="follower"))
    await asyncio.sleep(0.3)

    leader.cancel()
    with pytest.raises(asyncio.CancelledError):
        await leader
    outcome = await follower

    assert outcome.cached is False
    assert outcome.request_id == "follower"
    assert (await runtime.store.get_request("leader")).error_code == "cancelled"


async def test_two_runtimes_sharing_redis_generate_once(
    slow_simulator: SimulatorHarness,
    start_runtime: StartRuntime,
    redis_url: str,
    redis_namespace: str,
) -> None:
    shared = {"redis_url": redis_url, "redis_namespace": redis_namespace}
    first = await start_runtime(slow_simulator, **shared)
    second = await start_runtime(slow_simulator, **shared)

    outcomes = await asyncio.gather(
        *(first.service.generate(REQUEST) for _ in range(25)),
        *(second.service.generate(REQUEST) for _ in range(25)),
    )

    [leader] = generated(outcomes)
    assert await slow_simulator.calls() == leader.llm_calls
    assert all(outcome.topic == leader.topic for outcome in outcomes)


async def test_redis_outage_does_not_fail_generation(
    azure_simulator: SimulatorHarness,
    start_runtime: StartRuntime,
    closed_redis_url: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    runtime = await start_runtime(azure_simulator, redis_url=closed_redis_url)

    outcomes = [await runtime.service.generate(REQUEST) for _ in range(3)]

    assert [outcome.cached for outcome in outcomes] == [False, False, False]
    cache_warnings = [
        record
        for record in caplog.records
        if record.name.startswith("microtopic.cache") and record.levelno >= logging.WARNING
    ]
    assert len(cache_warnings) == 1
    assert "closed-port-password" not in caplog.text


async def test_cache_off_generates_every_time(
    azure_simulator: SimulatorHarness, start_runtime: StartRuntime
) -> None:
    runtime = await start_runtime(azure_simulator, cache=CacheConfig(enabled=False))

    outcomes = [await runtime.service.generate(REQUEST) for _ in range(2)]

    assert runtime.cache is None
    assert [outcome.cached for outcome in outcomes] == [False, False]
    assert await azure_simulator.calls() == sum(outcome.llm_calls for outcome in outcomes)
