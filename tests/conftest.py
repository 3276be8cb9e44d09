"""Fixtures shared across the test tree."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.harness import SimulatorHarness


@pytest.fixture
async def azure_simulator() -> AsyncIterator[SimulatorHarness]:
    """A fresh simulator with the keys `east`, `west` and `north`, stopped after the test."""
    async with SimulatorHarness.start() as harness:
        yield harness
