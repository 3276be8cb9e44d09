"""Fixtures of the job tests: the storage tests' databases, and a slow simulator."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.harness import SimulatorHarness

# The databases of the storage tests, SQLite and PostgreSQL, for the tests here too.
from tests.storage.conftest import database, empty_database

__all__ = ["database", "empty_database"]

SLOW_REPLY_S = 0.4


@pytest.fixture
async def slow_simulator() -> AsyncIterator[SimulatorHarness]:
    """A simulator whose every reply takes `SLOW_REPLY_S`, so items run long enough to interrupt."""
    async with SimulatorHarness.start(latency_s=SLOW_REPLY_S) as harness:
        yield harness
