"""Export of finished request traces to an OpenTelemetry receiver, over OTLP/HTTP.

Each finished request becomes one OpenTelemetry trace with a root span named
`generate`, or `forward` for a call forwarded through the passthrough. Under it
go a span for every span the request collected, one for every LLM attempt and
one for the write of its outcome, each under the same parent as in the stored
trace. When the request id is a UUID (the service makes 32 hex digits), it is
the trace id too, so the trace can be found from the request id. The root span
carries `microtopic.request_id` either way.

Times match the stored trace's: a monotonic time `t` becomes the trace's
wall-clock start plus `t` minus its monotonic start, and an LLM attempt keeps
the wall-clock start that the gateway read and lasts its latency.

Attributes hold key names, deployments, numbers, flags and error codes, never
prompts, completions, user text or secrets. The spans go to the SDK's
`BatchSpanProcessor`, which queues them in memory and sends them from its own
thread, so a request never waits for the receiver. A batch that fails to export
is dropped. The SDK's exporter logs every failed batch and retry at warning or
error level, so this module takes those records and logs one warning a minute
instead.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import uuid
from collections import defaultdict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from time import monotonic
from urllib.parse import urlsplit

from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.semconv.attributes.error_attributes import ERROR_TYPE
from opentelemetry.semconv.attributes.service_attributes import SERVICE_NAME, SERVICE_VERSION
from opentelemetry.trace import Span as OtelSpan
from opentelemetry.trace import SpanKind as OtelSpanKind
from opentelemetry.trace import Status, StatusCode, set_span_in_context
from opentelemetry.util.types import AttributeValue as OtelAttributeValue

from microtopic import __version__
from microtopic.config import TelemetryConfig
from microtopic.observability.export import FinishedTrace
from microtopic.observability.tracing import AttributeValue, Span, SpanKind, Trace
from microtopic.storage.records import SUCCESS_OUTCOME, LlmCallRecord, RequestKind

logger = logging.getLogger(__name__)

# The root span's name, by the kind of request the trace belongs to.
ROOT_SPAN_NAMES = {RequestKind.GENERATION: "generate", RequestKind.PASSTHROUGH: "forward"}
STORE_OUTCOME_SPAN_NAME = "store outcome"

# Token counts under the attribute names of OpenTelemetry's semantic conventions for
# generative AI, which are still in development.
INPUT_TOKENS = "gen_ai.usage.input_tokens"
OUTPUT_TOKENS = "gen_ai.usage.output_tokens"

WARNING_INTERVAL_S = 60.0

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

# The logger that the SDK's OTLP/HTTP span exporter (1.45) logs failed exports and retries to.
_OTLP_EXPORTER_LOGGER = "opentelemetry.exporter.otlp.proto.http.trace_exporter"
_MAX_REASON_LENGTH = 500

# The trace id that `_RequestIdGenerator` gives the root span being started, if any.
_root_trace_id: ContextVar[int | None] = ContextVar("microtopic_otel_trace_id", default=None)


class OtlpTraceExporter:
    """Sends each finished request's trace to `telemetry.otlp_endpoint`, off the request's path."""

    def __init__(self, config: TelemetryConfig) -> None:
        if config.otlp_endpoint is None:
            raise ValueError("OtlpTraceExporter needs telemetry.otlp_endpoint")
        self._endpoint = display_endpoint(config.otlp_endpoint)
        self._timeout_s = config.export_timeout_s
        self._log_capture = _ExporterLogCapture()

        otlp = OTLPSpanExporter(
            endpoint=config.otlp_endpoint,
            headers={name: value.get_secret_value() for name, value in config.headers.items()},
            timeout=config.export_timeout_s,
        )
        reporting = _ReportingSpanExporter(otlp, self._endpoint, self._log_capture)
        resource = Resource.create(
            {SERVICE_NAME: config.service_name, SERVICE_VERSION: __version__}
        )
        self._provider = TracerProvider(
            resource=resource, id_generator=_RequestIdGenerator(), shutdown_on_exit=False
        )
        self._provider.add_span_processor(BatchSpanProcessor(reporting))
        self._tracer = self._provider.get_tracer("microtopic", __version__)
        logging.getLogger(_OTLP_EXPORTER_LOGGER).addFilter(self._log_capture)
        logger.info(
            "exporting request traces to %s as service %s", self._endpoint, config.service_name
        )

    def export(self, finished: FinishedTrace) -> None:
        """Convert the trace into OpenTelemetry spans and queue them, without waiting for I/O."""
        trace = finished.trace
        spans = _spans_of(finished)
        start_ns = min([_epoch_ns(trace, trace.started), *(s.start_ns for s in spans)])
        end_ns = max([_epoch_ns(trace, finished.finished), *(s.end_ns for s in spans)])

        root = self._start_root(finished, start_ns)
        contexts: dict[int | None, Context] = {None: set_span_in_context(root)}
        for planned in _parents_first(spans):
            parent = contexts.get(planned.parent_id, contexts[None])
            started = self._tracer.start_span(
                planned.name,
                context=parent,
                kind=planned.kind,
                attributes=planned.attributes,
                start_time=planned.start_ns,
            )
            if planned.error is not None:
                started.set_status(Status(StatusCode.ERROR, planned.error))
            if planned.span_id is not None:
                contexts[planned.span_id] = set_span_in_context(started)
            started.end(end_time=planned.end_ns)
        root.end(end_time=end_ns)

    async def flush(self) -> None:
        """Send the spans queued so far, without waiting for the next scheduled batch.

        Each queued batch may take up to `telemetry.export_timeout_s` when the
        receiver does not respond.
        """
        # NOTE: the SDK's BatchSpanProcessor (1.45) ignores this timeout and exports
        # every queued batch, each bounded by the exporter's own timeout.
        timeout_ms = round(self._timeout_s * 1000)
        await asyncio.to_thread(self._provider.force_flush, timeout_ms)

    async def aclose(self) -> None:
        """Send the spans still queued, then stop the export thread."""
        try:
            await self.flush()
            await asyncio.to_thread(self._provider.shutdown)
        finally:
            logging.getLogger(_OTLP_EXPORTER_LOGGER).removeFilter(self._log_capture)

    def _start_root(self, finished: FinishedTrace, start_ns: int) -> OtelSpan:
        attributes: dict[str, OtelAttributeValue] = {
            "microtopic.request_id": finished.request_id,
            "microtopic.status": finished.status.value,
            "microtopic.kind": finished.kind.value,
        }
        if finished.error_code is not None:
            attributes[ERROR_TYPE] = finished.error_code
        token = _root_trace_id.set(trace_id_of(finished.request_id))
        try:
            # An empty context, so the root has no parent even when the host application
            # made a span of its own current, such as one for the HTTP request.
            root = self._tracer.start_span(
                ROOT_SPAN_NAMES[finished.kind],
                context=Context(),
                attributes=attributes,
                start_time=start_ns,
            )
        finally:
            _root_trace_id.reset(token)
        if finished.error_code is not None:
            root.set_status(Status(StatusCode.ERROR, finished.error_code))
        return root


def trace_id_of(request_id: str) -> int | None:
    """Return the request id as a 128-bit trace id when it is a UUID other than zero."""
    try:
        trace_id = uuid.UUID(request_id).int
    except ValueError:
        return None
    return trace_id or None


def display_endpoint(endpoint: str) -> str:
    """Return the endpoint without its query or fragment, safe to log."""
    parts = urlsplit(endpoint)
    return f"{parts.scheme}://{parts.netloc}{parts.path}"


class _RequestIdGenerator(RandomIdGenerator):
    """Random span ids, and the trace id in `_root_trace_id` for the root span being started."""

    def generate_trace_id(self) -> int:
        trace_id = _root_trace_id.get()
        if trace_id is None:
            return super().generate_trace_id()
        return trace_id

    def is_trace_id_random(self) -> bool:
        # A client may choose its request id, so a trace id taken from it need not be random.
        return False


@dataclass(frozen=True, slots=True)
class _PlannedSpan:
    """A span to create: its place in the request's trace, times in epoch nanoseconds."""

    span_id: int | None
    parent_id: int | None
    name: str
    kind: OtelSpanKind
    start_ns: int
    end_ns: int
    attributes: dict[str, OtelAttributeValue]
    error: str | None


def _spans_of(finished: FinishedTrace) -> list[_PlannedSpan]:
    trace = finished.trace
    spans = [_recorded_span(trace, recorded) for recorded in trace.spans]
    spans += [_call_span(call) for call in finished.calls]
    spans.append(_store_outcome_span(finished))
    return spans


def _recorded_span(trace: Trace, recorded: Span) -> _PlannedSpan:
    attributes: dict[str, OtelAttributeValue] = {"microtopic.kind": recorded.kind.value}
    attributes.update(_prefixed(recorded.attributes))
    error = recorded.attributes.get("error")
    if error is not None:
        attributes[ERROR_TYPE] = str(error)
    return _PlannedSpan(
        span_id=recorded.span_id,
        parent_id=recorded.parent_id,
        name=recorded.name,
        kind=OtelSpanKind.INTERNAL,
        start_ns=_epoch_ns(trace, recorded.start),
        end_ns=_epoch_ns(trace, recorded.end),
        attributes=attributes,
        error=None if error is None else str(error),
    )


def _call_span(call: LlmCallRecord) -> _PlannedSpan:
    error = None if call.outcome == SUCCESS_OUTCOME else call.outcome
    attributes: dict[str, OtelAttributeValue] = {
        "microtopic.kind": SpanKind.LLM_CALL.value,
        "microtopic.step": call.step,
        "microtopic.key": call.key_name,
        "microtopic.deployment": call.deployment,
        "microtopic.attempt": call.attempt,
        "microtopic.outcome": call.outcome,
        INPUT_TOKENS: call.prompt_tokens,
        OUTPUT_TOKENS: call.completion_tokens,
    }
    if error is not None:
        attributes[ERROR_TYPE] = error
    start_ns = _datetime_ns(call.started_at)
    return _PlannedSpan(
        span_id=call.span_id,
        parent_id=call.parent_id,
        name=f"attempt {call.attempt} on {call.key_name}",
        # The attempt is an outgoing HTTP call to the provider.
        kind=OtelSpanKind.CLIENT,
        start_ns=start_ns,
        end_ns=start_ns + round(call.latency_ms * 1_000_000),
        attributes=attributes,
        error=error,
    )


def _store_outcome_span(finished: FinishedTrace) -> _PlannedSpan:
    attributes: dict[str, OtelAttributeValue] = {"microtopic.kind": SpanKind.STORAGE.value}
    if finished.storage_error is not None:
        attributes[ERROR_TYPE] = finished.storage_error
    return _PlannedSpan(
        span_id=None,
        parent_id=None,
        name=STORE_OUTCOME_SPAN_NAME,
        kind=OtelSpanKind.INTERNAL,
        start_ns=_epoch_ns(finished.trace, finished.storing_since),
        end_ns=_epoch_ns(finished.trace, finished.finished),
        attributes=attributes,
        error=finished.storage_error,
    )


def _prefixed(attributes: dict[str, AttributeValue]) -> dict[str, OtelAttributeValue]:
    # OpenTelemetry has no null attribute value, so unset ones are left out. The error
    # goes to the standard `error.type` instead.
    return {
        f"microtopic.{name}": value
        for name, value in attributes.items()
        if value is not None and name != "error"
    }


def _parents_first(spans: Sequence[_PlannedSpan]) -> list[_PlannedSpan]:
    """Return the spans ordered so that each comes after its parent.

    A span whose parent is not in the trace, such as one whose parent was still
    open when the request ended, goes under the root.
    """
    known_ids = {planned.span_id for planned in spans if planned.span_id is not None}
    children: defaultdict[int | None, list[_PlannedSpan]] = defaultdict(list)
    for planned in spans:
        parent_id = planned.parent_id if planned.parent_id in known_ids else None
        children[parent_id].append(planned)

    ordered: list[_PlannedSpan] = []
    pending = list(children[None])
    while pending:
        planned = pending.pop()
        ordered.append(planned)
        if planned.span_id is not None:
            pending.extend(children.pop(planned.span_id, []))
    return ordered


def _epoch_ns(trace: Trace, at: float) -> int:
    """Return the monotonic time `at` of `trace` as nanoseconds since the Unix epoch."""
    return _datetime_ns(trace.started_at) + round((at - trace.started) * 1_000_000_000)


def _datetime_ns(at: datetime) -> int:
    # Integer arithmetic, because a float of seconds since 1970 resolves only about 0.24 µs.
    return (at - _EPOCH) // timedelta(microseconds=1) * 1000


class _ExporterLogCapture(logging.Filter):
    """Takes the records that the SDK's exporter logs inside `capture` blocks, in that thread.

    Records logged elsewhere, such as by another application's exporter in the same
    process, pass unchanged.
    """

    def __init__(self) -> None:
        super().__init__()
        self._local = threading.local()

    @contextmanager
    def capture(self) -> Iterator[list[str]]:
        messages: list[str] = []
        self._local.messages = messages
        try:
            yield messages
        finally:
            self._local.messages = None

    def filter(self, record: logging.LogRecord) -> bool:
        messages: list[str] | None = getattr(self._local, "messages", None)
        if messages is None:
            return True
        messages.append(record.getMessage())
        return False


class _ReportingSpanExporter(SpanExporter):
    """Passes batches to the OTLP exporter, and logs its failures as one warning a minute.

    The batch processor calls `export` from one thread at a time, under its lock.
    """

    def __init__(
        self, exporter: SpanExporter, endpoint: str, log_capture: _ExporterLogCapture
    ) -> None:
        self._exporter = exporter
        self._endpoint = endpoint
        self._log_capture = log_capture
        self._dropped_spans = 0  # since exports started failing
        self._unreported_spans = 0  # since the last warning
        self._warned_at: float | None = None

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        with self._log_capture.capture() as messages:
            result = self._exporter.export(spans)
        if result is SpanExportResult.SUCCESS:
            self._report_recovery()
        else:
            self._report_failure(len(spans), messages)
        return result

    def shutdown(self) -> None:
        self._exporter.shutdown()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return self._exporter.force_flush(timeout_millis)

    def _report_failure(self, span_count: int, messages: list[str]) -> None:
        self._dropped_spans += span_count
        self._unreported_spans += span_count
        now = monotonic()
        if self._warned_at is not None and now - self._warned_at < WARNING_INTERVAL_S:
            return

        reason = _reason(messages)
        if self._warned_at is None:
            logger.warning(
                "OpenTelemetry export to %s failed and %d spans were dropped. Requests are "
                "not affected, and while exports fail this warning repeats at most once a "
                "minute. %s",
                self._endpoint,
                self._unreported_spans,
                reason,
            )
        else:
            logger.warning(
                "OpenTelemetry export to %s still fails and %d more spans were dropped. %s",
                self._endpoint,
                self._unreported_spans,
                reason,
            )
        self._warned_at = now
        self._unreported_spans = 0

    def _report_recovery(self) -> None:
        if self._dropped_spans == 0:
            return
        logger.info(
            "OpenTelemetry export to %s works again, after %d spans were dropped.",
            self._endpoint,
            self._dropped_spans,
        )
        self._dropped_spans = 0
        self._unreported_spans = 0
        self._warned_at = None


def _reason(messages: list[str]) -> str:
    """Return a sentence with what the SDK's exporter logged about a failed batch."""
    if not messages:
        return "The exporter logged no reason."
    unique = list(dict.fromkeys(message.strip() for message in messages))
    reason = " ".join(unique).replace("\n", " ")
    if len(reason) > _MAX_REASON_LENGTH:
        reason = reason[: _MAX_REASON_LENGTH - 1] + "…"
    return f"The exporter reported: {reason}"
