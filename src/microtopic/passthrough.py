"""The passthrough service: other applications' chat calls, sent through our key pool.

A client's chat-completions body is forwarded as sent, with `model` set to the
chosen key's deployment or model, through the gateway's quotas, failover and
retries. Each forwarded call is timed as the `passthrough` operation.

Each call collects its trace like a generation (`observability.tracing`): a
`forward` step with the key selections, queue waits and attempts under it. With
a store, the call is stored when it ends, success or failure, with its attempts
and trace, and without its messages or reply (`storage.passthrough`). A failed
write is logged and the client still gets its reply. With a trace exporter, the
trace is handed to it too.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from microtopic.errors import DuplicateRequestError, MicrotopicError, StorageError
from microtopic.gateway import CallContext, Gateway, GatewayResult
from microtopic.observability import PerformanceStats, RequestCallLog
from microtopic.observability.export import FinishedTrace, TraceExporter, export_trace
from microtopic.observability.trace_records import call_records, trace_spans, trace_steps
from microtopic.observability.tracing import SpanKind, Trace, current_trace, record_span, span
from microtopic.providers.base import PassthroughRequest
from microtopic.storage import ForwardedCall, LlmCallRecord, PassthroughStore, RequestKind

logger = logging.getLogger(__name__)

STEP = "passthrough"
FORWARD_STEP = "forward"


class PassthroughService:
    """Forwards clients' chat bodies through the gateway and records how each call went."""

    def __init__(
        self,
        gateway: Gateway,
        stats: PerformanceStats,
        call_log: RequestCallLog,
        *,
        store: PassthroughStore | None = None,
        trace_exporter: TraceExporter | None = None,
    ) -> None:
        self._gateway = gateway
        self._stats = stats
        self._call_log = call_log
        self._store = store
        self._trace_exporter = trace_exporter

    async def forward(
        self,
        body: Mapping[str, Any],
        *,
        request_id: str,
        requested_model: str | None = None,
        received_at: float | None = None,
    ) -> GatewayResult:
        """Return the reply of the first key that serves `body`, or raise the gateway's error.

        `requested_model` is the model or deployment the client named, stored with
        the call. `received_at` (monotonic clock) is when the HTTP request arrived;
        the trace shows the time from then until now as the request's validation.
        """
        trace = Trace()
        token = current_trace.set(trace)
        try:
            if received_at is not None:
                record_span("validate request", SpanKind.VALIDATION, received_at, trace.started)
            return await self._forward(body, request_id, requested_model)
        finally:
            current_trace.reset(token)

    async def _forward(
        self, body: Mapping[str, Any], request_id: str, requested_model: str | None
    ) -> GatewayResult:
        context = CallContext(request_id=request_id, step=STEP)
        started = time.perf_counter()
        created_at = datetime.now(UTC)
        try:
            with span(FORWARD_STEP, SpanKind.STEP):
                result = await self._gateway.forward(PassthroughRequest(body), context)
        except BaseException as exc:
            self._stats.record(STEP, _ms_since(started), ok=False)
            code, message = _error_of(exc, request_id)
            call = _forwarded_call(body, request_id, requested_model, created_at, code, message)
            await self._finish(call)
            raise

        duration_ms = _ms_since(started)
        self._stats.record(STEP, duration_ms)
        await self._finish(_forwarded_call(body, request_id, requested_model, created_at))
        logger.info(
            "request %s: forwarded through key %s in %.0f ms (attempt %d)",
            request_id,
            result.key_name,
            duration_ms,
            result.attempts,
        )
        return result

    async def _finish(self, call: ForwardedCall) -> None:
        # The call log keeps every forwarded call's events, so they are taken even when
        # nothing stores them.
        calls = call_records(self._call_log.pop(call.request_id))
        storing_since = time.monotonic()
        storage_error = None
        if self._store is not None:
            storage_error = await self._store_call(self._store, call, calls)
        if self._trace_exporter is not None:
            self._export(call, calls, storing_since, storage_error)

    async def _store_call(
        self, store: PassthroughStore, call: ForwardedCall, calls: list[LlmCallRecord]
    ) -> str | None:
        """Store the call, and return the code of the error that stopped it, if any."""
        # Shielded: a cancelled call is stored too. A failed write must not fail the
        # call, so its error is logged and not raised.
        try:
            await asyncio.shield(
                store.add(call, steps=trace_steps(), calls=calls, spans=trace_spans())
            )
        except (StorageError, DuplicateRequestError) as exc:
            logger.error(
                "request %s: could not store the forwarded call: %s", call.request_id, exc.message
            )
            return exc.code
        return None

    def _export(
        self,
        call: ForwardedCall,
        calls: list[LlmCallRecord],
        storing_since: float,
        storage_error: str | None,
    ) -> None:
        trace = current_trace.get()
        if self._trace_exporter is None or trace is None:
            return
        finished = FinishedTrace(
            request_id=call.request_id,
            trace=trace,
            calls=calls,
            error_code=call.error_code,
            storing_since=storing_since,
            finished=time.monotonic(),
            storage_error=storage_error,
            kind=RequestKind.PASSTHROUGH,
        )
        export_trace(self._trace_exporter, finished)


def _forwarded_call(
    body: Mapping[str, Any],
    request_id: str,
    requested_model: str | None,
    created_at: datetime,
    error_code: str | None = None,
    error_message: str | None = None,
) -> ForwardedCall:
    # Only counts and names are kept: the messages are the client's text.
    messages = body.get("messages")
    max_tokens = body.get("max_tokens") or body.get("max_completion_tokens")
    return ForwardedCall(
        request_id=request_id,
        requested_model=requested_model,
        max_tokens=max_tokens if isinstance(max_tokens, int) else None,
        message_count=len(messages) if isinstance(messages, list) else 0,
        created_at=created_at,
        finished_at=datetime.now(UTC),
        error_code=error_code,
        error_message=error_message,
    )


def _error_of(exc: BaseException, request_id: str) -> tuple[str, str]:
    """Return the code and message to store for the error that ended a forwarded call."""
    if isinstance(exc, MicrotopicError):
        logger.warning("request %s: forwarded call failed: %s", request_id, exc.message)
        return exc.code, exc.message
    if isinstance(exc, asyncio.CancelledError):
        logger.info("request %s: forwarded call cancelled", request_id)
        return "cancelled", "The call was cancelled before a key served it."
    logger.exception("request %s: forwarded call failed unexpectedly", request_id, exc_info=exc)
    return "internal_error", "An unexpected error stopped the forwarded call."


def _ms_since(started: float) -> float:
    return (time.perf_counter() - started) * 1000
