"""Health checks: one cheap call per key, all keys at once, periodically and on demand.

A passing check brings a disabled, exhausted or open-circuited key back into
rotation. A failing one records the error class and applies it to the key as a
real call's failure would. A key that is only cooling down is skipped: it comes
back by itself when its cooldown ends, and a check would spend its quota.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from datetime import UTC, datetime

from microtopic.errors import UpstreamError
from microtopic.keypool.key import HealthRecord, KeyState, PooledKey
from microtopic.keypool.pool import KeyPool
from microtopic.log_context import current_key_name

logger = logging.getLogger(__name__)

# Tokens a check call is charged against a key's quota: a short prompt, one token out.
CHECK_TOKENS = 16


class HealthMonitor:
    """Checks the keys of a pool; `start` runs the checks every `interval_s`."""

    def __init__(self, pool: KeyPool) -> None:
        self._pool = pool
        self._interval_s = pool.config.health_check_interval_s
        self._timeout_s = pool.config.health_check_timeout_s
        self._task: asyncio.Task[None] | None = None

    async def check_all(self) -> list[tuple[PooledKey, HealthRecord]]:
        """Check every key concurrently and return each key's new record."""
        keys = self._pool.keys
        records = await asyncio.gather(*(self.check(key) for key in keys))
        return list(zip(keys, records, strict=True))

    async def check(self, key: PooledKey) -> HealthRecord:
        """Check one key, record the outcome on it and return the record."""
        # Every log line of the check, the pool's included, names the key.
        token = current_key_name.set(key.name)
        try:
            return await self._check(key)
        finally:
            current_key_name.reset(token)

    async def _check(self, key: PooledKey) -> HealthRecord:
        now = time.monotonic()
        if key.state(now) is KeyState.COOLING:
            return self._record(key, "skipped", reason="cooling down; it returns by itself")
        lease = await self._pool.lease_now(key, CHECK_TOKENS)
        if lease is None:
            return self._record(key, "skipped", reason="no quota or slot free for a check now")

        started = time.perf_counter()
        lease.sent = lease.settled = True  # the check's outcome is applied below
        try:
            await key.provider.check(timeout_s=self._timeout_s)
        except UpstreamError as exc:
            latency_ms = (time.perf_counter() - started) * 1000
            self._pool.record_check_failure(key, exc)
            logger.warning("health check of key %s failed: %s", key.name, exc.reason)
            return self._record(key, "failed", latency_ms, exc.code, exc.reason)
        finally:
            self._pool.release(lease)
        latency_ms = (time.perf_counter() - started) * 1000
        if key.state(time.monotonic()) is not KeyState.ACTIVE:
            self._pool.enable(key.name)
        return self._record(key, "ok", latency_ms)

    def start(self) -> None:
        """Run a check of every key each `interval_s` seconds, until `stop`."""
        if self._interval_s > 0 and self._task is None:
            self._task = asyncio.create_task(self._run(), name="key-health-monitor")

    async def stop(self) -> None:
        if self._task is None:
            return
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval_s)
            try:
                await self.check_all()
            except Exception:
                logger.exception("health checks failed; trying again in %.0f s", self._interval_s)

    def _record(
        self,
        key: PooledKey,
        status: str,
        latency_ms: float | None = None,
        error_code: str | None = None,
        reason: str | None = None,
    ) -> HealthRecord:
        record = HealthRecord(status, datetime.now(UTC), latency_ms, error_code, reason)
        key.health = record
        return record
