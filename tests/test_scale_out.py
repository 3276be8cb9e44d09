"""API and worker processes sharing one key pool through Redis, with PostgreSQL, on the simulator.

Every part runs as it would in production, each in its own process: the
simulator with two keys of known quotas, two `microtopic serve` processes and
two `microtopic worker` processes with one Redis namespace and one PostgreSQL
database. The load offered is three times what the keys admit, for three
simulated minutes: forwarded calls through both API processes, and a course
batch that the workers run at the same time.
"""

from __future__ import annotations

import asyncio
import math
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.processes import ServiceProcess, free_port

TIME_SCALE = 10.0  # a simulated minute passes in 6 s
RPM = 30  # per key: 5 requests per 10 s window, 5 calls per real second at this scale
TPM = 9000  # per key: about 60 calls of ~150 tokens per minute, so requests bind first
KEYS = ("east", "west")
LOAD = 3.0
DURATION_SIM_S = 180.0
MAX_TOKENS = 100
GATEWAY_TOKEN = "gw-scale-out-" + uuid.uuid4().hex
JOBS_PATH = "/api/v1/microtopic-content"
STATS_PATH = f"{JOBS_PATH}/service-stats"
COURSE_TOPICS = 8


@pytest.fixture
def secrets() -> dict[str, str]:
    return {name: f"sim-{name}-{uuid.uuid4().hex}" for name in KEYS}


@pytest.fixture
def simulator(tmp_path: Path, secrets: dict[str, str]) -> Iterator[str]:
    config = {
        "seed": 11,
        "time_scale": TIME_SCALE,
        "latency_s": 0.02,
        "latency_jitter": 0.2,
        "keys": [
            {"name": name, "secret": secret, "requests_per_minute": RPM, "tokens_per_minute": TPM}
            for name, secret in secrets.items()
        ],
    }
    path = tmp_path / "simulator.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    args = ["simulate", "--config", str(path), "--port", str(port)]
    log = tmp_path / "simulator.log"
    with ServiceProcess(args, log, ready_url=f"{base_url}/_simulator/stats"):
        yield base_url


@pytest.fixture
def service_config(
    tmp_path: Path,
    simulator: str,
    secrets: dict[str, str],
    redis_url: str,
    redis_namespace: str,
    postgres_database_url: str,
) -> Path:
    config = {
        "database_url": postgres_database_url,
        "redis_url": redis_url,
        "redis_namespace": redis_namespace,
        "gateway_api_keys": [GATEWAY_TOKEN],
        "log_level": "WARNING",
        # An item whose attempt finds no key free within the 2 s deadline is tried again
        # 2, 4, 8... s later, so the course finishes once the overload has passed.
        "jobs": {"runner": "arq", "concurrency": 4, "max_attempts": 6, "retry_delay_s": 2.0},
        "keys": [
            {
                "name": name,
                "provider": "azure",
                "endpoint": simulator,
                "deployment": "gpt-4o-mini",
                "api_version": "2024-10-21",
                "secret": secret,
                "requests_per_minute": RPM,
                "tokens_per_minute": TPM,
            }
            for name, secret in secrets.items()
        ],
        "gateway": {
            "max_concurrent_requests": 64,
            "request_deadline_s": 2.0,
            "health_check_interval_s": 0,
            "quota": {"time_scale": TIME_SCALE, "margin_s": 0.05},
        },
    }
    path = tmp_path / "service.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


@pytest.fixture
def api_urls(tmp_path: Path, service_config: Path) -> Iterator[list[str]]:
    """Two API processes and two workers; the API processes' base URLs."""
    with ExitStack() as stack:
        for index in range(2):
            args = ["worker", "--config", str(service_config)]
            stack.enter_context(ServiceProcess(args, tmp_path / f"worker-{index}.log"))
        urls = []
        for index in range(2):
            port = free_port()
            url = f"http://127.0.0.1:{port}"
            args = ["serve", "--port", str(port), "--config", str(service_config)]
            log = tmp_path / f"api-{index}.log"
            stack.enter_context(ServiceProcess(args, log, ready_url=f"{url}/healthz"))
            urls.append(url)
        yield urls


async def test_api_processes_share_quota_and_state(api_urls: list[str], simulator: str) -> None:
    calls_per_s = LOAD * len(KEYS) * _admitted_per_minute(RPM) / 60 * TIME_SCALE
    calls = round(calls_per_s * DURATION_SIM_S / TIME_SCALE)

    job_id = await _submit_course(api_urls[1])
    statuses = await _offer(api_urls, calls, calls_per_s)
    job = await _wait_for_job(api_urls[0], job_id)
    cooling_until = await _rate_limit_one_key(api_urls[0], simulator)
    stats = [await _stats(url) for url in api_urls]
    simulated = await _get(f"{simulator}/_simulator/stats")

    assert statuses.get(200, 0) > 0
    errors = [item["error"] for item in job["items"] if item["status"] != "succeeded"]
    assert job["progress"]["succeeded"] == COURSE_TOPICS, errors
    assert set(statuses) <= {200, 503, 504}  # served, no key in time, deadline passed
    for name in KEYS:
        key = simulated["keys"][name]
        assert key["rate_limited"]["quota"] == 0, f"{name} was over-admitted"
        assert key["requests"]["peak"] <= key["requests"]["limit"]
        assert key["tokens"]["peak"] <= key["tokens"]["limit"]
    served = sum(simulated["keys"][name]["successes"] for name in KEYS)
    # More than one key's worth: both keys were kept busy. bench/scale_out.py measures
    # goodput proper; here the windows are 1 s, so CPU contention moves the figure.
    assert served >= 0.7 * _most_calls(DURATION_SIM_S)
    first, second = ({key["name"]: key for key in document["keys"]} for document in stats)
    for name in KEYS:
        assert first[name]["shared"]["admitted"] == second[name]["shared"]["admitted"]
        assert first[name]["shared"]["served"] == second[name]["shared"]["served"]
        assert first[name]["shared"]["errors"] == second[name]["shared"]["errors"]
    # A call cut short by its request's deadline may still have been served upstream.
    counted = sum(first[name]["shared"]["served"] for name in KEYS)
    assert counted <= served
    assert first[cooling_until]["state"] == second[cooling_until]["state"] == "cooling"
    remaining = [keys[cooling_until]["cooldown_remaining_s"] for keys in (first, second)]
    assert all(20 < value <= 30 for value in remaining)
    assert abs(remaining[0] - remaining[1]) < 1.0


async def _submit_course(url: str) -> str:
    course = {
        "course": "scale-out",
        "subjects": [
            {
                "name": "Number theory",
                "topics": [
                    {"name": f"Primes {index}", "microtopics": [f"Primes {index}"]}
                    for index in range(COURSE_TOPICS)
                ],
            }
        ],
    }
    async with httpx.AsyncClient(timeout=30.0) as client:
        response = await client.post(f"{url}{JOBS_PATH}/courses", json=course)
    response.raise_for_status()
    job_id: str = response.json()["job"]["id"]
    return job_id


async def _wait_for_job(url: str, job_id: str, timeout_s: float = 120.0) -> dict[str, Any]:
    give_up = asyncio.get_running_loop().time() + timeout_s
    while True:
        document = await _get(f"{url}{JOBS_PATH}/jobs/{job_id}?results=false")
        job: dict[str, Any] = document["job"]
        progress = job["progress"]
        if progress["finished"] == progress["total"]:
            return job
        if asyncio.get_running_loop().time() > give_up:
            raise AssertionError(f"the batch did not finish within {timeout_s} s: {progress}")
        await asyncio.sleep(0.5)


def _admitted_per_minute(rpm: int) -> float:
    # The simulator admits floor(rpm / 6) requests per 10 s window, as Azure does.
    return math.floor(rpm * 10 / 60) * 6


def _most_calls(duration_sim_s: float) -> float:
    """The calls the keys admit together over `duration_sim_s` simulated seconds."""
    return len(KEYS) * _admitted_per_minute(RPM) * duration_sim_s / 60


async def _offer(urls: list[str], calls: int, calls_per_s: float) -> dict[int, int]:
    """Send `calls` forwarded calls at `calls_per_s`, alternating between `urls`."""
    statuses: dict[int, int] = {}
    headers = {"Authorization": f"Bearer {GATEWAY_TOKEN}"}
    body = {"model": "any", "max_tokens": MAX_TOKENS, "messages": [_message()]}
    limits = httpx.Limits(max_connections=200)
    async with httpx.AsyncClient(timeout=30.0, limits=limits, headers=headers) as client:

        async def one(url: str) -> None:
            response = await client.post(f"{url}/v1/chat/completions", json=body)
            statuses[response.status_code] = statuses.get(response.status_code, 0) + 1

        loop = asyncio.get_running_loop()
        start = loop.time()
        tasks = []
        for index in range(calls):
            delay = start + index / calls_per_s - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(urls[index % len(urls)])))
        await asyncio.gather(*tasks)
    return statuses


def _message() -> dict[str, str]:
    return {"role": "user", "content": "Name one prime number."}


async def _rate_limit_one_key(url: str, simulator: str) -> str:
    """Make the next call of one key get a 429 with a 30 s retry-after; return its name."""
    name = KEYS[0]
    fault = {"kind": "rate_limit", "retry_after_s": 30, "count": 1}
    headers = {"Authorization": f"Bearer {GATEWAY_TOKEN}"}
    body = {"model": "any", "max_tokens": MAX_TOKENS, "messages": [_message()]}
    async with httpx.AsyncClient(timeout=30.0, headers=headers) as client:
        response = await client.put(f"{simulator}/_simulator/keys/{name}/fault", json=fault)
        response.raise_for_status()
        await asyncio.sleep(1.0)  # let both keys' windows roll on
        for _ in range(4):
            await client.post(f"{url}/v1/chat/completions", json=body)
            stats = await _get(f"{simulator}/_simulator/stats")
            if stats["keys"][name]["faults"]:
                return name
    raise AssertionError(f"no call reached key {name} to be rate limited")


async def _stats(url: str) -> dict[str, Any]:
    return await _get(f"{url}{STATS_PATH}")


async def _get(url: str) -> dict[str, Any]:
    async with httpx.AsyncClient(timeout=10.0) as client:
        response = await client.get(url)
    response.raise_for_status()
    document: dict[str, Any] = response.json()
    return document
