"""Throughput of a course batch on 1, 2 and 4 `microtopic worker` processes sharing one pool.

Every part runs in its own process, as in production: the simulator with 4 keys,
one `microtopic serve` that takes the course, N `microtopic worker` processes
over one Redis namespace (the arq queue and the shared key pool state), and a
new PostgreSQL database per run. The course is 200 microtopics: 50 topics of 4
named microtopics each, so the planner is skipped and each microtopic costs its
writer's, quiz author's and reviewer's calls.

Two shapes:

- quota not the bottleneck: keys without quotas and a simulated latency of
  `CALL_LATENCY_S` per call, so time goes to waiting on the provider, as with a
  real model. The figure is microtopics per minute, and the speed-up over 1
  worker.
- quota the bottleneck: each key allows `BOUND_RPM` requests per minute, less
  than one worker sends, with a time scale so a minute passes in a few seconds.
  Goodput is the calls the simulator served per simulated minute, as a share of
  the keys' summed RPM. The strict figure also credits the keys with one full
  window, which windows that start empty admit at once, so it is the share of
  every call the keys could have taken in the batch's time. Both move by up to
  a window's worth (5% of this batch) with how the last items' calls fall
  into the last windows. The steady figure is the rate of calls from the end of
  the opening burst to the last two windows' worth of calls, while calls wait
  for every window, as a share of the keys' rate.

Both time the batch from its first item's start to its last item's end, after
every worker has started, so process start-up is left out.

    .venv/bin/python -m bench.scale_out               # about 6 minutes
    .venv/bin/python -m bench.scale_out --workers 1 2 --topics 10

It needs PostgreSQL and Redis on 127.0.0.1 (MICROTOPIC_BENCH_POSTGRES_URL and
MICROTOPIC_BENCH_REDIS_URL override them).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import redis
import yaml
from sqlalchemy import make_url, text
from sqlalchemy.ext.asyncio import create_async_engine

from bench.simulated import API_VERSION, DEPLOYMENT, free_port, simulator_process, simulator_stats

POSTGRES_URL = os.environ.get(
    "MICROTOPIC_BENCH_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
)
REDIS_URL = os.environ.get("MICROTOPIC_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
JOBS_PATH = "/api/v1/microtopic-content"
KEYS = 4
MICROTOPICS_PER_TOPIC = 4
CALL_LATENCY_S = 2.0
BOUND_RPM = 30  # per key: 5 calls per 10 s window
# The pool widens each window by `margin_s` to cover the spread in the delay from
# sending a call to its arrival. The default 0.05 s is 0.5% of a real 10 s window
# but 2.5% of one scaled to 2 s. On loopback the spread is mostly under 20 ms, so
# the bound shape uses this, and a call that arrives later gets a 429 (counted).
BOUND_MARGIN_S = 0.02
BOUND_TIME_SCALE = 5.0
# The 50 items fill whole rounds of 5 slots a worker on 1 and 2 workers (10 and 5
# rounds). With 8 slots, 1 worker runs 7 rounds and 2 workers 4, which caps the
# speed-up at 1.75 whatever the workers do; 4 workers run 3 rounds either way.
ITEMS_PER_WORKER = 5
# Workers log at INFO, so that their start-up line shows when they take items.
INFO = {"MICROTOPIC_LOG_LEVEL": "INFO"}
WORKER_STARTED = "worker starting on queue"


@dataclass(frozen=True)
class Shape:
    label: str
    rpm: int | None
    time_scale: float
    latency_s: float
    margin_s: float = 0.05


UNBOUND = Shape("quota not the bottleneck", None, 1.0, CALL_LATENCY_S)
BOUND = Shape("quota the bottleneck", BOUND_RPM, BOUND_TIME_SCALE, 0.02, BOUND_MARGIN_S)


@dataclass(frozen=True)
class Result:
    workers: int
    microtopics: int
    failed_items: int
    seconds: float
    calls_served: int
    rate_limited: int
    # Seconds from the batch's start to each call that succeeded, in order.
    call_starts: list[float]

    @property
    def per_minute(self) -> float:
        return self.microtopics / self.seconds * 60


def course(topics: int) -> dict[str, Any]:
    return {
        "course": f"bench-{uuid.uuid4().hex[:8]}",
        "subjects": [
            {
                "name": "Algebra",
                "topics": [
                    {
                        "name": f"Topic {index}",
                        "microtopics": [
                            f"Lesson {index}.{part}" for part in range(MICROTOPICS_PER_TOPIC)
                        ],
                    }
                    for index in range(topics)
                ],
            }
        ],
    }


def simulator_config(shape: Shape, secrets: list[str]) -> dict[str, Any]:
    keys = []
    for index, secret in enumerate(secrets):
        key: dict[str, Any] = {"name": f"key-{index}", "secret": secret}
        if shape.rpm is not None:
            key["requests_per_minute"] = shape.rpm
        keys.append(key)
    return {
        "seed": 5,
        "time_scale": shape.time_scale,
        "latency_s": shape.latency_s,
        "latency_jitter": 0.2,
        "keys": keys,
    }


def service_config(
    shape: Shape, simulator_url: str, secrets: list[str], database_url: str, namespace: str
) -> dict[str, Any]:
    keys = []
    for index, secret in enumerate(secrets):
        key: dict[str, Any] = {
            "name": f"key-{index}",
            "provider": "azure",
            "endpoint": simulator_url,
            "deployment": DEPLOYMENT,
            "api_version": API_VERSION,
            "secret": secret,
        }
        if shape.rpm is not None:
            key["requests_per_minute"] = shape.rpm
        keys.append(key)
    return {
        "database_url": database_url,
        "redis_url": REDIS_URL,
        "redis_namespace": namespace,
        "log_level": "WARNING",
        "cache": {"enabled": False},
        "jobs": {"runner": "arq", "concurrency": ITEMS_PER_WORKER},
        "keys": keys,
        "gateway": {
            "max_concurrent_requests": 64,
            "health_check_interval_s": 0,
            "quota": {"time_scale": shape.time_scale, "margin_s": shape.margin_s},
        },
    }


@contextlib.contextmanager
def new_database() -> Iterator[str]:
    """Create an empty PostgreSQL database; yield its URL, then drop it."""
    name = f"microtopic_bench_{uuid.uuid4().hex[:10]}"
    asyncio.run(_execute(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        asyncio.run(_execute(f'DROP DATABASE "{name}" WITH (FORCE)'))


async def _execute(statement: str) -> None:
    engine = create_async_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as connection:
            await connection.execute(text(statement))
    finally:
        await engine.dispose()


@contextlib.contextmanager
def microtopic(
    args: list[str], log_path: Path, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    command = str(Path(sys.executable).with_name("microtopic"))
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [command, *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
        )
    try:
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def run(shape: Shape, workers: int, topics: int) -> Result:
    secrets = [f"bench-{uuid.uuid4().hex}" for _ in range(KEYS)]
    namespace = f"microtopic-bench-{uuid.uuid4().hex[:8]}"
    with (
        tempfile.TemporaryDirectory() as folder,
        simulator_process(simulator_config(shape, secrets)) as simulator_url,
        new_database() as database_url,
    ):
        path = Path(folder) / "service.yaml"
        config = service_config(shape, simulator_url, secrets, database_url, namespace)
        path.write_text(yaml.safe_dump(config), encoding="utf-8")
        port = free_port()
        api_url = f"http://127.0.0.1:{port}"
        serve = ["serve", "--port", str(port), "--config", str(path)]
        with contextlib.ExitStack() as stack:
            stack.enter_context(microtopic(serve, Path(folder) / "api.log"))
            _wait_until_up(f"{api_url}/healthz")
            logs = [Path(folder) / f"worker-{index}.log" for index in range(workers)]
            for log in logs:
                stack.enter_context(microtopic(["worker", "--config", str(path)], log, INFO))
            _wait_until_started(logs)
            microtopics, failed, first_start, last_end = asyncio.run(
                _submit_and_wait(api_url, topics)
            )
            stats = simulator_stats(simulator_url)
        call_starts = asyncio.run(_call_starts(database_url, first_start))
        _forget_namespace(namespace)
    total = stats["total"]
    return Result(
        workers=workers,
        microtopics=microtopics,
        failed_items=failed,
        seconds=(last_end - first_start).total_seconds(),
        calls_served=total["successes"],
        rate_limited=total["status_counts"].get("429", 0),
        call_starts=call_starts,
    )


async def _call_starts(database_url: str, since: datetime) -> list[float]:
    """Return when each successful call started, in seconds from `since`, in order."""
    engine = create_async_engine(database_url)
    try:
        async with engine.connect() as connection:
            rows = await connection.execute(
                text("SELECT started_at FROM llm_calls WHERE outcome = 'success'")
            )
            starts = [row[0] for row in rows]
    finally:
        await engine.dispose()
    return sorted((start - since).total_seconds() for start in starts)


def steady_share(call_starts: list[float], window_s: float, per_window: int) -> float:
    """Return the rate of calls while the keys were saturated, as a share of their quota.

    It counts from the first call after the opening burst, and stops short of the
    last two windows' worth of calls, when too few calls are left to fill the
    windows. The span is a whole number of windows' worth, so the windows'
    bunching into bursts does not shift the figure.
    """
    first = per_window
    bursts = (len(call_starts) - 2 * per_window - first) // per_window
    if bursts < 1:
        return math.nan
    last = first + bursts * per_window
    seconds = call_starts[last] - call_starts[first]
    return (last - first) / seconds * window_s / per_window


async def _submit_and_wait(api_url: str, topics: int) -> tuple[int, int, datetime, datetime]:
    async with httpx.AsyncClient(base_url=api_url, timeout=60.0) as http:
        response = await http.post(f"{JOBS_PATH}/courses", json=course(topics))
        response.raise_for_status()
        job_id = response.json()["job"]["id"]
        while True:
            job = (await http.get(f"{JOBS_PATH}/jobs/{job_id}")).json()["job"]
            if job["progress"]["finished"] == job["progress"]["total"]:
                break
            await asyncio.sleep(0.2)
    items = job["items"]
    done = [item for item in items if item["status"] == "succeeded"]
    microtopics = sum(len(item["data"]["microtopics"]) for item in done if item["data"])
    first_start = min(datetime.fromisoformat(item["started_at"]) for item in items)
    last_end = max(datetime.fromisoformat(item["finished_at"]) for item in items)
    return microtopics, len(items) - len(done), first_start, last_end


def _wait_until_started(logs: list[Path]) -> None:
    """Wait until every worker has logged that it starts taking items."""
    give_up = time.monotonic() + 60
    while time.monotonic() < give_up:
        if all(WORKER_STARTED in log.read_text(errors="replace") for log in logs):
            return
        time.sleep(0.2)
    raise SystemExit(f"A worker did not start within 60 s; see its log in {logs[0].parent}.")


def _wait_until_up(url: str) -> None:
    give_up = time.monotonic() + 60
    while time.monotonic() < give_up:
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(url, timeout=1.0).status_code == 200:
                return
        time.sleep(0.2)
    raise SystemExit(f"The API did not start: no response from {url} within 60 s.")


def _forget_namespace(namespace: str) -> None:
    client = redis.Redis.from_url(REDIS_URL)
    keys = list(client.scan_iter(match=f"{namespace}:*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


def admitted_per_minute(rpm: int) -> float:
    # The simulator admits floor(rpm / 6) calls per 10 s window, as Azure does.
    return KEYS * math.floor(rpm * 10 / 60) * 6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--topics", type=int, default=50, help="topics of 4 microtopics each")
    parser.add_argument(
        "--shape", choices=("both", "unbound", "bound"), default="both", help="which runs"
    )
    args = parser.parse_args()
    if args.shape != "bound":
        run_unbound(args.workers, args.topics)
    if args.shape != "unbound":
        run_bound(args.workers, args.topics)


def run_unbound(worker_counts: list[int], topics: int) -> None:
    print(f"{UNBOUND.label}: {KEYS} keys, {CALL_LATENCY_S} s per call, {topics * 4} microtopics")
    columns = ("microtopics", "failed", "seconds", "per min", "speed-up")
    print(f"{'workers':>7} " + " ".join(f"{name:>11}" for name in columns))
    base = None
    for workers in worker_counts:
        result = run(UNBOUND, workers, topics)
        base = base or result.per_minute
        print(
            f"{workers:>7} {result.microtopics:>11} {result.failed_items:>11} "
            f"{result.seconds:>11.1f} {result.per_minute:>11.0f} "
            f"{result.per_minute / base:>10.2f}x",
            flush=True,
        )
    print()


def run_bound(worker_counts: list[int], topics: int) -> None:
    most = admitted_per_minute(BOUND_RPM)
    per_window = most / 6
    print(
        f"{BOUND.label}: {KEYS} keys at {BOUND_RPM} RPM, time scale {BOUND_TIME_SCALE:g}, "
        f"window margin {BOUND_MARGIN_S} s"
    )
    window_s = 10 / BOUND_TIME_SCALE  # the RPM window, 10 s scaled
    columns = ("calls", "429s", "sim min", "goodput", "strict", "steady")
    print(f"{'workers':>7} " + " ".join(f"{name:>8}" for name in columns))
    for workers in worker_counts:
        result = run(BOUND, workers, topics)
        minutes = result.seconds * BOUND_TIME_SCALE / 60
        goodput = result.calls_served / (most * minutes)
        # Windows that start empty admit one full window at once, so the most the
        # keys admit in `minutes` is their rate for that long plus one window.
        strict = result.calls_served / (most * minutes + per_window)
        steady = steady_share(result.call_starts, window_s, round(per_window))
        print(
            f"{workers:>7} {result.calls_served:>8} {result.rate_limited:>8} "
            f"{minutes:>8.2f} {goodput:>8.1%} {strict:>8.1%} {steady:>8.1%}",
            flush=True,
        )


if __name__ == "__main__":
    main()
