"""Single flight in one process: one leader per key, followers share its value or its error."""

from __future__ import annotations

import asyncio
import gc
import logging
import time

import pytest

from microtopic.cache.flight import SingleFlight
from microtopic.errors import DeadlineExceededError, InvalidModelOutputError


class Work:
    """A leader's work that waits until released, counting its runs."""

    def __init__(self, result: str = "generated") -> None:
        self.result = result
        self.runs = 0
        self.started = asyncio.Event()
        self.second_run = asyncio.Event()
        self.release = asyncio.Event()
        self.error: Exception | None = None

    async def __call__(self) -> str:
        self.runs += 1
        self.started.set()
        if self.runs == 2:
            self.second_run.set()
        await self.release.wait()
        if self.error is not None:
            raise self.error
        return f"{self.result} #{self.runs}"


def shared(result: str) -> str:
    return f"shared {result}"


async def start_callers(
    flight: SingleFlight[str], work: Work, count: int, *, deadline: float | None = None
) -> list[asyncio.Task[str]]:
    tasks = [
        asyncio.create_task(flight.run("key", work, shared, deadline=deadline))
        for _ in range(count)
    ]
    await work.started.wait()
    await asyncio.sleep(0)  # Let every caller reach its wait.
    return tasks


async def test_fifty_callers_share_one_run() -> None:
    flight: SingleFlight[str] = SingleFlight()
    work = Work()
    tasks = await start_callers(flight, work, 50)

    work.release.set()
    results = await asyncio.gather(*tasks)

    assert work.runs == 1
    assert results.count("generated #1") == 1
    assert results.count("shared generated #1") == 49
    assert len(flight) == 0


async def test_other_keys_run_apart() -> None:
    flight: SingleFlight[str] = SingleFlight()
    work = Work()
    work.release.set()

    results = await asyncio.gather(flight.run("a", work, shared), flight.run("b", work, shared))

    assert work.runs == 2
    assert sorted(results) == ["generated #1", "generated #2"]


async def test_leader_error_reaches_waiting_followers() -> None:
    flight: SingleFlight[str] = SingleFlight()
    work = Work()
    work.error = InvalidModelOutputError("The reviewer rejected it.", step="plan", problems=[])
    tasks = await start_callers(flight, work, 5)

    work.release.set()
    outcomes = await asyncio.gather(*tasks, return_exceptions=True)

    assert work.runs == 1
    assert all(outcome is work.error for outcome in outcomes)


async def test_leader_error_is_not_remembered() -> None:
    flight: SingleFlight[str] = SingleFlight()
    work = Work()
    work.error = InvalidModelOutputError("The reviewer rejected it.", step="plan", problems=[])
    work.release.set()
    with pytest.raises(InvalidModelOutputError):
        await flight.run("key", work, shared)

    work.error = None
    result = await flight.run("key", work, shared)

    assert result == "generated #2"
    assert len(flight) == 0


async def test_unfollowed_error_is_not_logged(caplog: pytest.LogCaptureFixture) -> None:
    flight: SingleFlight[str] = SingleFlight()
    work = Work()
    work.error = InvalidModelOutputError("The reviewer rejected it.", step="plan", problems=[])
    work.release.set()

    with pytest.raises(InvalidModelOutputError):
        await flight.run("key", work, shared)
    gc.collect()
    await asyncio.sleep(0)

    assert not [r for r in caplog.records if "never retrieved" in r.getMessage()]


async def test_cancelled_follower_leaves_leader_running() -> None:
    flight: SingleFlight[str] = SingleFlight()
    work = Work()
    leader, follower, other = await start_callers(flight, work, 3)

    follower.cancel()
    await asyncio.sleep(0)
    work.release.set()

    assert await leader == "generated #1"
    assert await other == "shared generated #1"
    assert follower.cancelled()
    assert work.runs == 1


async def test_cancelled_leader_hands_over_to_follower() -> None:
    flight: SingleFlight[str] = SingleFlight()
    work = Work()
    leader, *followers = await start_callers(flight, work, 4)

    leader.cancel()
    # Released only once a follower took over, so that it is still leading.
    await asyncio.wait_for(work.second_run.wait(), 5)
    work.release.set()
    results = await asyncio.gather(*followers)

    assert leader.cancelled()
    assert work.runs == 2
    assert sorted(results) == ["generated #2", "shared generated #2", "shared generated #2"]


async def test_follower_deadline_stops_only_follower() -> None:
    flight: SingleFlight[str] = SingleFlight(deadline_s=0.05)
    work = Work()
    leader = asyncio.create_task(flight.run("key", work, shared))
    await work.started.wait()

    with pytest.raises(DeadlineExceededError) as raised:
        await flight.run("key", work, shared, deadline=time.monotonic() + 0.05)
    work.release.set()

    assert raised.value.deadline_s == 0.05
    assert "identical request" in raised.value.message
    assert await leader == "generated #1"


async def test_leader_timeout_error_is_not_deadline() -> None:
    flight: SingleFlight[str] = SingleFlight()
    work = Work()
    work.error = TimeoutError("the leader's own timeout")
    tasks = await start_callers(flight, work, 2, deadline=time.monotonic() + 30)

    work.release.set()
    outcomes = await asyncio.gather(*tasks, return_exceptions=True)

    assert all(outcome is work.error for outcome in outcomes)


async def test_follower_logs_nothing_above_debug(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="microtopic.cache.flight")
    flight: SingleFlight[str] = SingleFlight()
    work = Work()
    tasks = await start_callers(flight, work, 3)

    work.release.set()
    await asyncio.gather(*tasks)

    assert all(record.levelno <= logging.DEBUG for record in caplog.records)
