"""Single flight across two `microtopic serve` processes that share Redis."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from tests.api.support import GENERATE_PATH
from tests.harness import API_VERSION, DEPLOYMENT, KEY_NAMES, SimulatorHarness
from tests.processes import AppProcess

BODY = {"course_id": "math-101", "subject_name": "Mathematics", "topic_name": "Slope"}


@pytest.fixture
async def slow_simulator() -> AsyncIterator[SimulatorHarness]:
    """A simulator whose every reply takes 0.2 s, so that a generation lasts over a second."""
    async with SimulatorHarness.start(latency_s=0.2) as harness:
        yield harness


def write_config(
    path: Path, simulator: SimulatorHarness, redis_url: str, namespace: str, database: Path
) -> Path:
    config = {
        "database_url": f"sqlite+aiosqlite:///{database}",
        "redis_url": redis_url,
        "redis_namespace": namespace,
        "keys": [
            {
                "name": name,
                "provider": "azure",
                "endpoint": simulator.server.base_url,
                "deployment": DEPLOYMENT,
                "api_version": API_VERSION,
                "secret": simulator.secrets[name],
            }
            for name in KEY_NAMES
        ],
    }
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


@pytest.fixture
def services(
    tmp_path: Path, slow_simulator: SimulatorHarness, redis_url: str, redis_namespace: str
) -> Iterator[tuple[AppProcess, AppProcess]]:
    """Two service processes with a SQLite file each and one Redis namespace."""
    processes = []
    for name in ("first", "second"):
        config = write_config(
            tmp_path / f"{name}.yaml",
            slow_simulator,
            redis_url,
            redis_namespace,
            tmp_path / f"{name}.db",
        )
        processes.append(AppProcess(config, tmp_path / f"{name}.log"))
    with processes[0] as first, processes[1] as second:
        yield first, second


async def test_two_processes_generate_once(
    services: tuple[AppProcess, AppProcess], slow_simulator: SimulatorHarness
) -> None:
    first, second = services

    async with httpx.AsyncClient(timeout=60.0) as client:
        responses = await asyncio.gather(
            *(client.post(first.base_url + GENERATE_PATH, json=BODY) for _ in range(10)),
            *(client.post(second.base_url + GENERATE_PATH, json=BODY) for _ in range(10)),
        )

    assert [response.status_code for response in responses] == [200] * 20, first.log()
    bodies = [response.json() for response in responses]
    [leader] = [body for body in bodies if not body["cached"]]
    assert await slow_simulator.calls() == leader["metadata"]["llm_calls"]
    assert all(body["data"] == leader["data"] for body in bodies)
    for body in bodies:
        if body["cached"]:
            assert body["metadata"]["llm_calls"] == 0
            assert [step["name"] for step in body["metadata"]["steps"]] == ["cache"]
