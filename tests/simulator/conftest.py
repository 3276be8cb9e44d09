"""Fixtures that run the simulator on 127.0.0.1 and point the real openai SDK at it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import httpx
import openai
import pytest

from microtopic.simulator import SimulatedKey, SimulatorConfig, SimulatorServer
from tests.simulator.constants import API_VERSION, DEPLOYMENT, EAST_SECRET, WEST_SECRET


@pytest.fixture
def simulator_config() -> SimulatorConfig:
    return SimulatorConfig(
        keys=[
            SimulatedKey(name="east", secret=EAST_SECRET, deployments=[DEPLOYMENT]),
            SimulatedKey(name="west", secret=WEST_SECRET),
        ],
        models={DEPLOYMENT: "gpt-4o-mini-2024-07-18"},
        seed=7,
    )


@pytest.fixture
def simulator(simulator_config: SimulatorConfig) -> Iterator[SimulatorServer]:
    with SimulatorServer(simulator_config) as server:
        yield server


@pytest.fixture
async def azure_client(simulator: SimulatorServer) -> AsyncIterator[openai.AsyncAzureOpenAI]:
    async with openai.AsyncAzureOpenAI(
        azure_endpoint=simulator.azure_endpoint,
        api_key=EAST_SECRET,
        api_version=API_VERSION,
        max_retries=0,
    ) as client:
        yield client


@pytest.fixture
async def openai_client(simulator: SimulatorServer) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(
        base_url=simulator.openai_base_url, api_key=WEST_SECRET, max_retries=0
    ) as client:
        yield client


@pytest.fixture
async def http(simulator: SimulatorServer) -> AsyncIterator[httpx.AsyncClient]:
    """A plain HTTP client for the control API and for requests the SDK cannot send."""
    async with httpx.AsyncClient(base_url=simulator.base_url) as client:
        yield client
