"""The in-process backend: least recently used entries go first, and entries expire."""

from __future__ import annotations

import pytest

from microtopic.cache.memory import MemoryBackend


class FakeClock:
    """A monotonic clock that moves only when a test advances it."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_stored_value_is_read_back() -> None:
    backend = MemoryBackend(max_entries=2)

    await backend.set("a", "first", ttl_s=60)

    assert await backend.get("a") == "first"
    assert await backend.get("b") is None


async def test_write_replaces_value() -> None:
    backend = MemoryBackend(max_entries=2)
    await backend.set("a", "first", ttl_s=60)

    await backend.set("a", "second", ttl_s=60)

    assert await backend.get("a") == "second"
    assert len(backend) == 1


async def test_entry_expires_after_ttl() -> None:
    clock = FakeClock()
    backend = MemoryBackend(max_entries=2, clock=clock)
    await backend.set("a", "first", ttl_s=60)

    clock.now += 59.9
    before = await backend.get("a")
    clock.now += 0.1
    after = await backend.get("a")

    assert before == "first"
    assert after is None
    assert len(backend) == 0


async def test_rewrite_restarts_ttl() -> None:
    clock = FakeClock()
    backend = MemoryBackend(max_entries=2, clock=clock)
    await backend.set("a", "first", ttl_s=60)
    clock.now += 50

    await backend.set("a", "second", ttl_s=60)
    clock.now += 50

    assert await backend.get("a") == "second"


async def test_oldest_entry_is_evicted_past_max() -> None:
    backend = MemoryBackend(max_entries=2)
    await backend.set("a", "1", ttl_s=60)
    await backend.set("b", "2", ttl_s=60)

    await backend.set("c", "3", ttl_s=60)

    assert await backend.get("a") is None
    assert await backend.get("b") == "2"
    assert await backend.get("c") == "3"
    assert len(backend) == 2


async def test_read_entry_is_kept_over_unread() -> None:
    backend = MemoryBackend(max_entries=2)
    await backend.set("a", "1", ttl_s=60)
    await backend.set("b", "2", ttl_s=60)
    await backend.get("a")

    await backend.set("c", "3", ttl_s=60)

    assert await backend.get("a") == "1"
    assert await backend.get("b") is None


async def test_rewritten_entry_is_kept_over_older() -> None:
    backend = MemoryBackend(max_entries=2)
    await backend.set("a", "1", ttl_s=60)
    await backend.set("b", "2", ttl_s=60)
    await backend.set("a", "1 again", ttl_s=60)

    await backend.set("c", "3", ttl_s=60)

    assert await backend.get("a") == "1 again"
    assert await backend.get("b") is None


def test_max_entries_below_one_is_rejected() -> None:
    with pytest.raises(ValueError, match="max_entries"):
        MemoryBackend(max_entries=0)
