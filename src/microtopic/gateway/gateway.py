"""The gateway: applies the retry strategy and fails over between keys of the pool.

This is the only retry layer (the SDK's retries are off). A request makes at
most the attempts its strategy allows, counted across all keys. After a failure
the next attempt goes at once to another key; the failed key is reused only
when no other can take the call, and not before the strategy's `delay_s`. The
pool decides when a key may be used again (cooldowns, breakers, quotas), so the
gateway never sleeps between attempts.

Some failures are not the key's: a content filter refusal is raised at once, and
a reply cut off at `max_tokens` is retried once with more tokens.

`forward` sends a client's own chat body through the same loop (the passthrough),
and its reply comes back whole even when it was cut off or filtered.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from microtopic.config import GatewayConfig, ProviderKind, RetryStrategy, StructuredOutput
from microtopic.errors import (
    AllKeysFailedError,
    AllKeysRateLimitedError,
    DeadlineExceededError,
    KeyFailure,
    NoKeyAvailableError,
    TruncatedOutputError,
    UpstreamError,
    UpstreamRateLimitError,
    UpstreamTimeoutError,
)
from microtopic.gateway.events import CallContext, CallEvent, CallObserver
from microtopic.keypool import Demand, KeyPool, Lease, PooledKey
from microtopic.log_context import current_key_name, current_request_id
from microtopic.observability.tracing import SpanKind, child_ids, record_span, span
from microtopic.providers.base import ChatRequest, ChatResult, PassthroughRequest, on_send

logger = logging.getLogger(__name__)

# A truncated reply is retried with this many tokens at most.
MAX_TOKENS_CEILING = 16_384

# With `log_prompts`, a prompt or completion longer than this is cut in the log.
MAX_LOGGED_TEXT_CHARS = 20_000

# The requests the failover loop carries: our structured-output ones, or a client's body.
AnyRequest = ChatRequest | PassthroughRequest


@dataclass(frozen=True)
class GatewayResult:
    """A completion and the key that served it."""

    result: ChatResult
    key_name: str
    provider: str
    deployment: str
    attempts: int


@dataclass(frozen=True, slots=True)
class _AttemptStart:
    """When an attempt was sent, on both clocks, and its place in the request's trace."""

    started_at: datetime
    started: float  # time.perf_counter()
    span_id: int | None
    parent_id: int | None


@dataclass(frozen=True)
class CapacityStats:
    """Calls in flight against the gateway's cap, and calls waiting for a key."""

    max_concurrent_requests: int
    active_requests: int
    available_slots: int
    queued_requests: int
    max_queue_size: int
    total_requests: int
    failed_requests: int


class _TokenCost:
    """A request's admission tokens per key, computed once per structured-output mode."""

    def __init__(self, request: AnyRequest) -> None:
        self._request = request
        self._by_mode: dict[tuple[ProviderKind, StructuredOutput], int] = {}
        self._passthrough: int | None = None

    def for_key(self, key: PooledKey) -> int:
        if isinstance(self._request, PassthroughRequest):
            # A client's body is sent unchanged to every key, so its cost is the same.
            if self._passthrough is None:
                self._passthrough = self._request.admission_tokens()
            return self._passthrough
        mode = (key.config.provider, key.config.structured_output)
        cost = self._by_mode.get(mode)
        if cost is None:
            cost = self._by_mode[mode] = key.provider.admission_tokens(self._request)
        return cost


class Gateway:
    """Sends chat requests through the key pool, within each request's deadline."""

    def __init__(self, pool: KeyPool, config: GatewayConfig, *, log_prompts: bool = False) -> None:
        self._pool = pool
        self._config = config
        self._log_prompts = log_prompts
        self._total = 0
        self._failed = 0
        self._observers: list[CallObserver] = []

    @property
    def pool(self) -> KeyPool:
        return self._pool

    @property
    def config(self) -> GatewayConfig:
        return self._config

    def subscribe(self, observer: CallObserver) -> None:
        """Call `observer` after every attempt, successful or failed."""
        self._observers.append(observer)

    def capacity(self) -> CapacityStats:
        """Return the current use of the concurrency cap and the queue."""
        pool = self._pool.capacity()
        return CapacityStats(
            max_concurrent_requests=pool.max_concurrent_requests,
            active_requests=pool.active_requests,
            available_slots=pool.available_slots,
            queued_requests=pool.queued_requests,
            max_queue_size=pool.max_queue_size,
            total_requests=self._total,
            failed_requests=self._failed,
        )

    async def complete(self, request: ChatRequest, context: CallContext) -> GatewayResult:
        """Return a completion for `request` from the first key that serves it.

        Raises `NoKeyAvailableError` when no key can serve before the deadline,
        `ServiceAtCapacityError` when the queue is full, `DeadlineExceededError`
        when the deadline passes between attempts, `AllKeysFailedError` when every
        allowed attempt failed, and an `UpstreamError` at once for a request every
        key would refuse (bad request, content filter) or a reply truncated twice.
        """
        self._total += 1
        try:
            return await self._complete_with_failover(request, context)
        except BaseException:
            self._failed += 1
            raise

    async def forward(self, request: PassthroughRequest, context: CallContext) -> GatewayResult:
        """Return the reply to a client's chat body from the first key that serves it.

        The body goes through the same quotas, failover and retries as `complete`
        and raises the same errors, with two exceptions. A reply cut off at its
        limit or withheld by the content filter is returned as it came. A body
        that the provider rejects raises `RequestRejectedError`.
        """
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

    async def _complete_with_failover(
        self, request: AnyRequest, context: CallContext
    ) -> GatewayResult:
        strategy = self._strategy(context)
        deadline = context.deadline or time.monotonic() + self._config.request_deadline_s
        cost = _TokenCost(request)
        failures: list[KeyFailure] = []
        demand = Demand(cost.for_key, deadline)
        truncated: TruncatedOutputError | None = None
        for attempt in range(1, strategy.retries + 2):
            self._check_deadline(deadline, failures)
            lease = await self._acquire(demand, failures, attempt)
            try:
                result = await self._complete_once(lease, request, context, attempt, deadline)
            except TruncatedOutputError as exc:
                if truncated is not None or isinstance(request, PassthroughRequest):
                    raise
                truncated = exc
                request = self._with_more_tokens(request)
                cost = _TokenCost(request)
                demand = Demand(cost.for_key, deadline, demand.avoid, demand.avoid_until)
                continue
            except UpstreamError as exc:
                failures.append(KeyFailure(lease.key.name, exc.code, exc.reason))
                if not exc.retryable:
                    raise
                avoid_until = time.monotonic() + strategy.delay_s
                demand = Demand(cost.for_key, deadline, frozenset({lease.key.name}), avoid_until)
                continue
            finally:
                self._pool.release(lease)
            return self._wrap(result, lease.key, attempt)
        if truncated is not None and not failures:
            raise truncated
        raise self._all_failed(failures)

    def _all_failed(self, failures: list[KeyFailure]) -> AllKeysFailedError:
        # When every attempt was a 429 the keys are healthy but busy, so give the wait.
        rate_limited = all(f.error_code == UpstreamRateLimitError.code for f in failures)
        retry_after_s = self._pool.earliest_return_s()
        if rate_limited and retry_after_s is not None:
            return AllKeysRateLimitedError(failures, retry_after_s=retry_after_s)
        return AllKeysFailedError(failures)

    def _check_deadline(self, deadline: float, failures: list[KeyFailure]) -> None:
        if time.monotonic() < deadline:
            return
        tried = "; ".join(f"{f.key_name}: {f.reason}" for f in failures) or "no attempt finished"
        raise DeadlineExceededError(
            f"The request's deadline passed before a key served it ({tried}). Retry the "
            "request, or raise gateway.request_deadline_s.",
            deadline_s=self._config.request_deadline_s,
        )

    async def _acquire(self, demand: Demand, failures: list[KeyFailure], attempt: int) -> Lease:
        with span("key selection", SpanKind.KEY_SELECTION, {"attempt": attempt}) as selecting:
            try:
                lease = await self._pool.acquire(demand)
            except NoKeyAvailableError as exc:
                # With no key ever returning, the failures explain more than "no key",
                # so list them.
                if failures and exc.retry_after_s is None:
                    raise self._all_failed(failures) from None
                raise
            finally:
                for start, end in demand.waits:
                    record_span(
                        "queue wait", SpanKind.QUEUE, start, end, parent_id=selecting.span_id
                    )
            selecting.set("key", lease.key.name)
            return lease

    async def _complete_once(
        self,
        lease: Lease,
        request: AnyRequest,
        context: CallContext,
        attempt: int,
        deadline: float,
    ) -> ChatResult:
        # Every log line of the attempt, the pool's included, carries the key and the request.
        key_token = current_key_name.set(lease.key.name)
        request_token = current_request_id.set(context.request_id or current_request_id.get())
        try:
            return await self._attempt(lease, request, context, attempt, deadline)
        finally:
            current_request_id.reset(request_token)
            current_key_name.reset(key_token)

    async def _attempt(
        self,
        lease: Lease,
        request: AnyRequest,
        context: CallContext,
        attempt: int,
        deadline: float,
    ) -> ChatResult:
        key = lease.key
        timeout_s = min(self._timeout_s(key), deadline - time.monotonic())
        cut_by_deadline = timeout_s < self._timeout_s(key)
        if self._log_prompts and logger.isEnabledFor(logging.DEBUG):
            logger.debug("prompt of attempt %d: %s", attempt, _loggable_prompt(request))
        span_id, parent_id = child_ids()
        start = _AttemptStart(datetime.now(UTC), time.perf_counter(), span_id, parent_id)
        self._pool.mark_sent(lease)
        try:
            result = await self._send(lease, request, max(0.001, timeout_s))
        except UpstreamTimeoutError as exc:
            if not cut_by_deadline:
                self._on_failure(lease, context, attempt, start, exc)
                raise
            # The request ran out of time, not the key: nothing is held against it.
            self._notify(key, context, attempt, start, None, exc)
            self._check_deadline(deadline, [KeyFailure(key.name, exc.code, exc.reason)])
            raise
        except UpstreamError as exc:
            self._on_failure(lease, context, attempt, start, exc)
            raise
        self._pool.succeeded(lease, result.headers)
        self._notify(key, context, attempt, start, result, None)
        if self._log_prompts and logger.isEnabledFor(logging.DEBUG):
            logger.debug("completion of attempt %d: %s", attempt, _shortened(result.content))
        return result

    async def _send(self, lease: Lease, request: AnyRequest, timeout_s: float) -> ChatResult:
        provider = lease.key.provider
        # The charge is dated again as the request leaves, after the SDK has built it.
        sending = on_send.set(lambda: self._pool.mark_sent(lease))
        try:
            if isinstance(request, PassthroughRequest):
                return await provider.forward(request, timeout_s=timeout_s)
            return await provider.complete(request, timeout_s=timeout_s)
        finally:
            on_send.reset(sending)

    def _on_failure(
        self,
        lease: Lease,
        context: CallContext,
        attempt: int,
        start: _AttemptStart,
        error: UpstreamError,
    ) -> None:
        self._pool.failed(lease, error)
        level = logging.WARNING if error.key_fault else logging.INFO
        logger.log(
            level,
            "request %s: key %s failed on attempt %d: %s",
            context.request_id,
            lease.key.name,
            attempt,
            error.reason,
        )
        self._notify(lease.key, context, attempt, start, None, error)

    def _with_more_tokens(self, request: ChatRequest) -> ChatRequest:
        factor = self._config.truncation_retry_factor
        max_tokens = min(MAX_TOKENS_CEILING, math.ceil(request.max_tokens * factor))
        logger.info("retrying a truncated reply with max_tokens=%d", max_tokens)
        return replace(request, max_tokens=max_tokens)

    def _notify(
        self,
        key: PooledKey,
        context: CallContext,
        attempt: int,
        start: _AttemptStart,
        result: ChatResult | None,
        error: UpstreamError | None,
    ) -> None:
        event = CallEvent(
            context=context,
            key_name=key.name,
            deployment=key.config.model_label,
            attempt=attempt,
            started_at=start.started_at,
            latency_ms=(time.perf_counter() - start.started) * 1000,
            prompt_tokens=result.prompt_tokens if result else 0,
            completion_tokens=result.completion_tokens if result else 0,
            outcome="success" if error is None else error.code,
            reason=None if error is None else error.reason,
            span_id=start.span_id,
            parent_id=start.parent_id,
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


def _loggable_prompt(request: AnyRequest) -> str:
    if isinstance(request, PassthroughRequest):
        messages = request.body.get("messages")
    else:
        messages = [{"role": m.role, "content": m.content} for m in request.messages]
    return _shortened(json.dumps(messages, ensure_ascii=False, default=str))


def _shortened(text: str) -> str:
    if len(text) <= MAX_LOGGED_TEXT_CHARS:
        return text
    return f"{text[:MAX_LOGGED_TEXT_CHARS]}… ({len(text) - MAX_LOGGED_TEXT_CHARS} more characters)"
