"""A small OTLP/HTTP traces receiver on 127.0.0.1, served from a background thread.

It accepts `POST /v1/traces` with a protobuf body, as an OpenTelemetry collector
does, and keeps each request's raw body, headers and decoded spans.
"""

from __future__ import annotations

import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span

HOST = "127.0.0.1"
TRACES_PATH = "/v1/traces"


class OtlpReceiver:
    """The receiver as a context manager: entering starts it, exiting stops it."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        self.headers: list[dict[str, str]] = []
        self.requests: list[ExportTraceServiceRequest] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer((HOST, 0), _handler_for(self))
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="otlp-receiver", daemon=True
        )

    @property
    def endpoint(self) -> str:
        return f"http://{HOST}:{self._server.server_address[1]}{TRACES_PATH}"

    def spans(self) -> list[Span]:
        """Return every span received, in the order they arrived."""
        with self._lock:
            requests = list(self.requests)
        return [
            span
            for request in requests
            for resource_spans in request.resource_spans
            for scope_spans in resource_spans.scope_spans
            for span in scope_spans.spans
        ]

    def resource_attributes(self) -> list[dict[str, Any]]:
        """Return the resource attributes of every batch received."""
        with self._lock:
            requests = list(self.requests)
        return [
            attributes_of(resource_spans.resource.attributes)
            for request in requests
            for resource_spans in request.resource_spans
        ]

    def keep(self, body: bytes, headers: dict[str, str]) -> None:
        """Decode and keep one export request; `headers` has lower-case names."""
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        with self._lock:
            self.bodies.append(body)
            self.headers.append(headers)
            self.requests.append(request)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


def attributes_of(attributes: Any) -> dict[str, Any]:
    """Return OTLP key-value attributes as a dict of plain Python values."""
    return {attribute.key: _plain(attribute) for attribute in attributes}


def unused_endpoint() -> str:
    """Return a traces URL on a port of 127.0.0.1 where nothing listens."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        port = probe.getsockname()[1]
    return f"http://{HOST}:{port}{TRACES_PATH}"


def _plain(attribute: KeyValue) -> Any:
    kind = attribute.value.WhichOneof("value")
    return None if kind is None else getattr(attribute.value, kind)


def _handler_for(receiver: OtlpReceiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            body = self.rfile.read(length)
            if self.path != TRACES_PATH:
                self._respond(404, b"")
                return
            receiver.keep(body, {name.lower(): value for name, value in self.headers.items()})
            self._respond(200, ExportTraceServiceResponse().SerializeToString())

        def _respond(self, status: int, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            # The base class writes every request to stderr.
            pass

    return Handler
