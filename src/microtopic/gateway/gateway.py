"""The gateway: caps concurrent calls, applies the retry strategy and fails over between keys.

This is the only retry layer. Each attempt goes to the next key in the pool's
rotation, avoiding the key that just failed when another is free, and the number
of attempts is counted across all keys.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime

from microtopic.config import GatewayConfig, ProviderKind, RetryStrategy
from microtopic.errors import (
    AllKeysFailedError,
    KeyFailure,
    NoKeyAvailableError,
    ServiceAtCapacityError,
    UpstreamError,
)
from microtopic.gateway.events import CallContext, CallEvent, CallObserver
from microtopic.keypool import KeyPool, PooledKey
from microtopic.providers.base import ChatRequest, ChatResult

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class GatewayResult:
    """A completion and the key that served it."""

    result: ChatResult
    key_name: str
    provider: str
    deployment: str
    attempts: int


@dataclass(frozen=True)
class CapacityStats:
    """How many calls are in flight against the gateway's cap."""

    max_concurrent_requests: int
    active_requests: int
    available_slots: int
    total_requests: int
    failed_requests: int


class Gateway:
    """Sends chat requests through the key pool within a cap of concurrent calls."""

    def __init__(self, pool: KeyPool, config: GatewayConfig) -> None:
        self._pool = pool
        self._config = config
        self._slots = asyncio.Semaphore(config.max_concurrent_requests)
        self._active = 0
        self._total = 0
        self._failed = 0
        self._observers: list[CallObserver] = []

    @property
    def pool(self) -> KeyPool:
        return self._pool

    def subscribe(self, observer: CallObserver) -> None:
        """Call `observer` after every attempt, successful or failed."""
        self._observers.append(observer)

    def capacity(self) -> CapacityStats:
        """Return the current use of the concurrency cap."""
        limit = self._config.max_concurrent_requests
        return CapacityStats(
            max_concurrent_requests=limit,
            active_requests=self._active,
            available_slots=limit - self._active,
            total_requests=self._total,
            failed_requests=self._failed,
        )

    async def complete(self, request: ChatRequest, context: CallContext) -> GatewayResult:
        """Return a completion for `request` from the first key that serves it.

        Raises `ServiceAtCapacityError` when no slot frees up within the queue
        timeout, `NoKeyAvailableError` when no key is active, `AllKeysFailedError`
        when every allowed attempt failed, and `UpstreamError` at once for a
        request the provider rejects as invalid (it would fail on every key).
        """
        async with self._slot():
            self._total += 1
            try:
                return await self._complete_with_failover(request, context)
            except BaseException:
                self._failed += 1
                raise

    async def aclose(self) -> None:
        """Close every key's provider client."""
        for key in self._pool.keys:
            await key.provider.aclose()

    @asynccontextmanager
    async def _slot(self) -> AsyncIterator[None]:
        timeout_s = self._config.queue_timeout_s
        try:
            async with asyncio.timeout(timeout_s):
                await self._slots.acquire()
        except TimeoutError:
            raise ServiceAtCapacityError(
                f"Service at maximum capacity: all {self._config.max_concurrent_requests} "
                f"concurrent request slots stayed busy for {timeout_s:.0f} s. Retry later or "
                "raise gateway.max_concurrent_requests.",
                max_concurrent_requests=self._config.max_concurrent_requests,
                retry_after_s=timeout_s,
            ) from None
        self._active += 1
        try:
            yield
        finally:
            self._active -= 1
            self._slots.release()

    async def _complete_with_failover(
        self, request: ChatRequest, context: CallContext
    ) -> GatewayResult:
        strategy = self._strategy(context)
        failures: list[KeyFailure] = []
        avoid: str | None = None
        for attempt in range(1, strategy.retries + 2):
            if attempt > 1:
                await asyncio.sleep(strategy.delay_s)
            key = await self._acquire(avoid, failures)
            try:
                result = await self._complete_once(key, request, context, attempt)
            except UpstreamError as exc:
                failures.append(KeyFailure(key.name, exc.code, exc.reason))
                if not exc.retryable:
                    raise
                avoid = key.name
                continue
            finally:
                await self._pool.release(key)
            return self._wrap(result, key, attempt)
        raise AllKeysFailedError(failures)

    async def _acquire(self, avoid: str | None, failures: list[KeyFailure]) -> PooledKey:
        try:
            return await self._pool.acquire(avoid=avoid, timeout_s=self._config.queue_timeout_s)
        except NoKeyAvailableError:
            # After failed attempts, the failures say more than "no key": list them.
            if failures:
                raise AllKeysFailedError(failures) from None
            raise

    async def _complete_once(
        self, key: PooledKey, request: ChatRequest, context: CallContext, attempt: int
    ) -> ChatResult:
        started_at = datetime.now(UTC)
        started = time.perf_counter()
        try:
            result = await key.provider.complete(request, timeout_s=self._timeout_s(key))
        except UpstreamError as exc:
            self._pool.record_failure(key, exc.reason, disable=exc.disables_key)
            logger.warning(
                "request %s: key %s failed on attempt %d: %s",
                context.request_id,
                key.name,
                attempt,
                exc.reason,
            )
            self._notify(key, context, attempt, started_at, started, None, exc)
            raise
        self._notify(key, context, attempt, started_at, started, result, None)
        return result

    def _notify(
        self,
        key: PooledKey,
        context: CallContext,
        attempt: int,
        started_at: datetime,
        started: float,
        result: ChatResult | None,
        error: UpstreamError | None,
    ) -> None:
        event = CallEvent(
            context=context,
            key_name=key.name,
            deployment=key.config.model_label,
            attempt=attempt,
            started_at=started_at,
            latency_ms=(time.perf_counter() - started) * 1000,
            prompt_tokens=result.prompt_tokens if result else 0,
            completion_tokens=result.completion_tokens if result else 0,
            outcome="success" if error is None else error.code,
            reason=None if error is None else error.reason,
        )
        for observer in self._observers:
            try:
                if error is None:
                    observer.on_call_completed(event)
                else:
                    observer.on_call_failed(event)
            except Exception:
                logger.exception("call observer %r failed; the call itself is unaffected", observer)

    def _strategy(self, context: CallContext) -> RetryStrategy:
        retry = self._config.retry
        return retry.retry_request if context.is_retry else retry.first_request

    def _timeout_s(self, key: PooledKey) -> float:
        if key.config.provider is ProviderKind.LOCAL:
            return self._config.local_call_timeout_s
        return self._config.call_timeout_s

    def _wrap(self, result: ChatResult, key: PooledKey, attempt: int) -> GatewayResult:
        return GatewayResult(
            result=result,
            key_name=key.name,
            provider=str(key.config.provider),
            deployment=key.config.model_label,
            attempts=attempt,
        )
