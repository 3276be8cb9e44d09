"""Round-robin selection over the keys that are active and have a free slot.

A key leaves the rotation when it returns 401 or 403 and comes back only when it
is re-enabled (`KeyPool.enable`). A key with `max_concurrency` serves at most that
many calls at once; when every active key is full, `acquire` waits for a release.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import UTC, datetime

from microtopic.config import KeyConfig
from microtopic.errors import NoKeyAvailableError, NotFoundError, ServiceAtCapacityError
from microtopic.providers.base import Provider

logger = logging.getLogger(__name__)


@dataclass
class PooledKey:
    """A key with its provider client and its counters."""

    config: KeyConfig
    provider: Provider
    usage_count: int = 0
    error_count: int = 0
    last_used: datetime | None = None
    is_active: bool = True
    disabled_reason: str | None = None
    last_error: str | None = None
    active_calls: int = 0

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def has_free_slot(self) -> bool:
        limit = self.config.max_concurrency
        return limit is None or self.active_calls < limit


class KeyPool:
    """The keys the gateway may use, chosen round-robin."""

    def __init__(self, keys: list[PooledKey]) -> None:
        if not keys:
            raise ValueError("a key pool needs at least one key")
        self._keys = keys
        self._by_name = {key.name: key for key in keys}
        self._cursor = 0
        self._released = asyncio.Condition()

    @property
    def keys(self) -> list[PooledKey]:
        return list(self._keys)

    def get(self, name: str) -> PooledKey:
        """Return the key called `name`, or raise `NotFoundError`."""
        try:
            return self._by_name[name]
        except KeyError:
            raise NotFoundError(
                f"No key is named {name!r}; `microtopic keys` lists them."
            ) from None

    async def acquire(self, *, avoid: str | None, timeout_s: float) -> PooledKey:
        """Take a slot on the next available key, preferring any key but `avoid`.

        Raises `NoKeyAvailableError` at once when no key is active, and
        `ServiceAtCapacityError` when every active key stays full for `timeout_s`.
        """
        async with self._released:
            try:
                async with asyncio.timeout(timeout_s):
                    await self._released.wait_for(self._has_candidate)
            except TimeoutError:
                raise self._capacity_error(timeout_s) from None
            key = self._next_key(avoid)
            key.active_calls += 1
            key.usage_count += 1
            key.last_used = datetime.now(UTC)
            return key

    async def release(self, key: PooledKey) -> None:
        """Give back the slot taken by `acquire`."""
        async with self._released:
            key.active_calls -= 1
            self._released.notify_all()

    def record_failure(self, key: PooledKey, reason: str, *, disable: bool) -> None:
        """Count a failed call; take the key out of rotation when `disable` is set."""
        key.error_count += 1
        key.last_error = reason
        if disable and key.is_active:
            key.is_active = False
            key.disabled_reason = reason
            logger.warning("key %s disabled: %s", key.name, reason)

    def enable(self, name: str) -> PooledKey:
        """Put a disabled key back into rotation."""
        key = self.get(name)
        key.is_active = True
        key.disabled_reason = None
        logger.info("key %s enabled", name)
        return key

    def _has_candidate(self) -> bool:
        active = [key for key in self._keys if key.is_active]
        if not active:
            raise NoKeyAvailableError(
                f"No API key is available: all {len(self._keys)} keys are disabled after "
                "authentication failures. Fix or replace their secrets, then re-enable them "
                "(POST /api/v1/microtopic-content/keys/{name}/enable or restart the service).",
                key_count=len(self._keys),
                inactive_count=len(self._keys),
            )
        return any(key.has_free_slot for key in active)

    def _next_key(self, avoid: str | None) -> PooledKey:
        count = len(self._keys)
        fallback: PooledKey | None = None
        for offset in range(count):
            key = self._keys[(self._cursor + offset) % count]
            if not (key.is_active and key.has_free_slot):
                continue
            if key.name == avoid:
                fallback = fallback or key
                continue
            self._cursor = (self._cursor + offset + 1) % count
            return key
        assert fallback is not None  # _has_candidate saw a free active key
        return fallback

    def _capacity_error(self, timeout_s: float) -> ServiceAtCapacityError:
        total = sum(key.config.max_concurrency or 0 for key in self._keys if key.is_active)
        return ServiceAtCapacityError(
            f"Service at maximum capacity: every active key stayed busy ({total} calls in "
            f"flight) for {timeout_s:.0f} s. Retry later, add keys, or raise max_concurrency.",
            max_concurrent_requests=total,
            retry_after_s=timeout_s,
        )
