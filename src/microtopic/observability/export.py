"""The hand-over of a finished request's trace to an exporter, and the exporter's loading.

The exporter itself (`microtopic.observability.otel`) needs the OpenTelemetry SDK,
which only the `otel` extra installs, so this module imports it only when
`telemetry.otlp_endpoint` is set.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from microtopic.config import TelemetryConfig
from microtopic.errors import ConfigError
from microtopic.observability.tracing import Trace
from microtopic.storage.records import LlmCallRecord, RequestKind, RequestStatus

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class FinishedTrace:
    """The trace of a request that has ended, with its LLM attempts and its outcome.

    `error_code` is None for a success. `storing_since` and `finished` are on the
    monotonic clock, like the trace's spans: the write of the outcome started at
    `storing_since`, and the request ended at `finished`, once that write returned
    or failed. `storage_error` is the code of the error that write raised, if any.
    `storing_since` equals `finished` when the outcome was not stored.
    """

    request_id: str
    trace: Trace
    calls: Sequence[LlmCallRecord]
    error_code: str | None
    storing_since: float
    finished: float
    storage_error: str | None = None
    kind: RequestKind = RequestKind.GENERATION

    @property
    def status(self) -> RequestStatus:
        return RequestStatus.SUCCEEDED if self.error_code is None else RequestStatus.FAILED


class TraceExporter(Protocol):
    """A destination of finished traces. `export` must be quick and must not block."""

    def export(self, finished: FinishedTrace) -> None: ...

    async def aclose(self) -> None: ...


def export_trace(exporter: TraceExporter, finished: FinishedTrace) -> None:
    """Hand `finished` to `exporter`, and log any error it raises instead of raising it.

    The export only reports on the request, so a fault in it must not change the
    request's outcome.
    """
    try:
        exporter.export(finished)
    except Exception:
        logger.exception("request %s: its trace could not be exported", finished.request_id)


def load_trace_exporter(config: TelemetryConfig) -> TraceExporter | None:
    """Start the export that `config` sets up, or return None when export is off.

    Raises `ConfigError` when an endpoint is set but the OpenTelemetry packages
    are not installed.
    """
    if config.otlp_endpoint is None:
        return None
    try:
        from microtopic.observability.otel import OtlpTraceExporter
    except ImportError as exc:
        # ModuleNotFoundError when a package is missing; a plain ImportError when a
        # namespace package such as `opentelemetry.sdk` is left without its modules.
        if not (exc.name or "").startswith("opentelemetry"):
            raise
        raise ConfigError(
            "telemetry.otlp_endpoint is set, but the OpenTelemetry packages are not "
            f"installed ({exc.name} cannot be imported). Install them with "
            "`pip install 'microtopic[otel]'`, or unset telemetry.otlp_endpoint."
        ) from None
    return OtlpTraceExporter(config)
