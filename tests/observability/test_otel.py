"""The OTLP export of request traces: real generations over the Azure simulator, sent to a
real OTLP/HTTP receiver on 127.0.0.1."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status
from pydantic import SecretStr

from microtopic.config import CacheConfig, Settings, TelemetryConfig
from microtopic.domain import GenerationRequest
from microtopic.errors import AllKeysFailedError
from microtopic.observability.otel import OtlpTraceExporter, trace_id_of
from microtopic.runtime import Runtime
from microtopic.service import GenerationOutcome
from microtopic.storage import RequestStatus
from tests.api.support import CLIENT_BODY, GENERATE_PATH
from tests.app_server import AppServer
from tests.harness import DEPLOYMENT, FAST_GATEWAY, KEY_NAMES, SimulatorHarness
from tests.observability.otlp_receiver import OtlpReceiver, attributes_of, unused_endpoint

REQUEST = GenerationRequest(
    course_id="math-101", subject_name="Mathematics", topic_name="Linear equations"
)
SERVICE_NAME = "microtopic-test"


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as receiver:
        yield receiver


@pytest.fixture
def header_token() -> str:
    """A made-up API token for the receiver, sent as a header, that no other test uses."""
    return "otlp-token-" + uuid.uuid4().hex


def settings_for(
    simulator: SimulatorHarness,
    tmp_path: Path,
    endpoint: str,
    header_token: str,
    *,
    export_timeout_s: float = 5.0,
) -> Settings:
    telemetry = TelemetryConfig(
        otlp_endpoint=endpoint,
        headers={"Authorization": SecretStr(f"Bearer {header_token}")},
        service_name=SERVICE_NAME,
        export_timeout_s=export_timeout_s,
    )
    return Settings(
        keys=[simulator.azure_key(name) for name in KEY_NAMES],
        gateway=FAST_GATEWAY,
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'otel.db'}",
        cache=CacheConfig(enabled=False),
        telemetry=telemetry,
    )


@asynccontextmanager
async def running(settings: Settings) -> AsyncIterator[Runtime]:
    """A runtime for the block; closing it flushes the spans it queued."""
    runtime = await Runtime.start(settings)
    try:
        yield runtime
    finally:
        await runtime.aclose()


@dataclass
class Exported:
    """A generation whose trace went to the receiver, and the clock around it."""

    request_id: str
    outcome: GenerationOutcome
    spans: list[Span]
    before_ns: int
    after_ns: int

    @property
    def root(self) -> Span:
        (root,) = [span for span in self.spans if not span.parent_span_id]
        return root

    def of_kind(self, kind: str) -> list[Span]:
        return [span for span in self.spans if attributes(span).get("microtopic.kind") == kind]


def attributes(span: Span) -> dict[str, Any]:
    return attributes_of(span.attributes)


async def export_failover(
    simulator: SimulatorHarness, receiver: OtlpReceiver, settings: Settings
) -> Exported:
    """Generate once with the key `east` revoked, so the first attempt fails over."""
    await simulator.set_fault("east", "revoked")
    request_id = uuid.uuid4().hex
    before_ns = time.time_ns()
    async with running(settings) as runtime:
        outcome = await runtime.service.generate(REQUEST, request_id=request_id)
    after_ns = time.time_ns()
    return Exported(request_id, outcome, receiver.spans(), before_ns, after_ns)


async def test_generation_exports_one_trace(
    azure_simulator: SimulatorHarness, receiver: OtlpReceiver, tmp_path: Path, header_token: str
) -> None:
    settings = settings_for(azure_simulator, tmp_path, receiver.endpoint, header_token)

    exported = await export_failover(azure_simulator, receiver, settings)

    spans = exported.spans
    assert {span.trace_id for span in spans} == {bytes.fromhex(exported.request_id)}
    root = exported.root
    assert root.name == "generate"
    assert attributes(root)["microtopic.request_id"] == exported.request_id
    assert attributes(root)["microtopic.status"] == "succeeded"
    assert "error.type" not in attributes(root)
    assert root.status.code == Status.STATUS_CODE_UNSET
    span_ids = [span.span_id for span in spans]
    assert len(set(span_ids)) == len(spans)
    assert all(span.parent_span_id in span_ids for span in spans if span is not root)
    names = {span.name for span in spans}
    assert {"store request", "plan", "write:1", "quiz:1", "store outcome"} <= names
    assert {resource["service.name"] for resource in receiver.resource_attributes()} == {
        SERVICE_NAME
    }


async def test_attempts_carry_key_attempt_and_outcome(
    azure_simulator: SimulatorHarness, receiver: OtlpReceiver, tmp_path: Path, header_token: str
) -> None:
    settings = settings_for(azure_simulator, tmp_path, receiver.endpoint, header_token)

    exported = await export_failover(azure_simulator, receiver, settings)

    calls = exported.of_kind("llm_call")
    assert len(calls) == exported.outcome.llm_calls
    assert all(call.kind == Span.SPAN_KIND_CLIENT for call in calls)
    (failed,) = [call for call in calls if call.status.code == Status.STATUS_CODE_ERROR]
    assert failed.name == "attempt 1 on east"
    assert attributes(failed)["microtopic.key"] == "east"
    assert attributes(failed)["microtopic.attempt"] == 1
    assert attributes(failed)["microtopic.outcome"] == "upstream_auth_failed"
    assert attributes(failed)["error.type"] == "upstream_auth_failed"
    (served,) = [
        call
        for call in calls
        if call.parent_span_id == failed.parent_span_id
        and attributes(call)["microtopic.attempt"] == 2
    ]
    assert attributes(served)["microtopic.key"] in ("west", "north")
    assert attributes(served)["microtopic.outcome"] == "success"
    assert attributes(served)["microtopic.deployment"] == DEPLOYMENT
    assert attributes(served)["gen_ai.usage.input_tokens"] > 0
    assert attributes(served)["gen_ai.usage.output_tokens"] > 0
    step_ids = {span.span_id for span in exported.of_kind("step")}
    assert all(call.parent_span_id in step_ids for call in calls)
    selections = exported.of_kind("key_selection")
    assert len(selections) == len(calls)
    assert {attributes(span)["microtopic.key"] for span in selections} >= {"east"}


async def test_span_times_nest_in_their_parents(
    azure_simulator: SimulatorHarness, receiver: OtlpReceiver, tmp_path: Path, header_token: str
) -> None:
    settings = settings_for(azure_simulator, tmp_path, receiver.endpoint, header_token)

    exported = await export_failover(azure_simulator, receiver, settings)

    root = exported.root
    # The trace's start is read at microsecond precision, so it may fall up to 1 µs early.
    assert exported.before_ns - 1000 <= root.start_time_unix_nano
    assert root.end_time_unix_nano <= exported.after_ns
    by_id = {span.span_id: span for span in exported.spans}
    for span in exported.spans:
        assert span.start_time_unix_nano <= span.end_time_unix_nano
        assert root.start_time_unix_nano <= span.start_time_unix_nano
        assert span.end_time_unix_nano <= root.end_time_unix_nano
        parent = by_id.get(span.parent_span_id)
        # An attempt's times come from the wall clock, the other spans' from the
        # monotonic clock, so only spans of the same clock are compared.
        if parent is None or parent is root or span.kind == Span.SPAN_KIND_CLIENT:
            continue
        assert parent.start_time_unix_nano <= span.start_time_unix_nano
        assert span.end_time_unix_nano <= parent.end_time_unix_nano


async def test_export_holds_no_secret_or_user_text(
    azure_simulator: SimulatorHarness,
    receiver: OtlpReceiver,
    tmp_path: Path,
    header_token: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    settings = settings_for(azure_simulator, tmp_path, receiver.endpoint, header_token)

    exported = await export_failover(azure_simulator, receiver, settings)

    assert exported.spans
    received = b"".join(receiver.bodies)
    for secret in azure_simulator.secrets.values():
        assert secret.encode() not in received
    assert header_token.encode() not in received
    assert REQUEST.topic_name.encode() not in received
    assert REQUEST.subject_name.encode() not in received
    assert all(headers["authorization"] == f"Bearer {header_token}" for headers in receiver.headers)
    assert header_token not in caplog.text
    assert header_token not in repr(settings)


async def test_failed_generation_exports_error_status(
    azure_simulator: SimulatorHarness, receiver: OtlpReceiver, tmp_path: Path, header_token: str
) -> None:
    for name in KEY_NAMES:
        await azure_simulator.set_fault(name, "revoked")
    settings = settings_for(azure_simulator, tmp_path, receiver.endpoint, header_token)

    async with running(settings) as runtime:
        with pytest.raises(AllKeysFailedError):
            await runtime.service.generate(REQUEST)

    spans = receiver.spans()
    (root,) = [span for span in spans if not span.parent_span_id]
    assert attributes(root)["microtopic.status"] == "failed"
    assert attributes(root)["error.type"] == "all_keys_failed"
    assert root.status.code == Status.STATUS_CODE_ERROR
    assert root.status.message == "all_keys_failed"
    (plan,) = [span for span in spans if span.name == "plan"]
    assert plan.status.code == Status.STATUS_CODE_ERROR
    assert attributes(plan)["error.type"] == "all_keys_failed"
    calls = sorted(
        (span for span in spans if span.kind == Span.SPAN_KIND_CLIENT),
        key=lambda call: attributes(call)["microtopic.attempt"],
    )
    assert [attributes(call)["microtopic.key"] for call in calls] == list(KEY_NAMES)
    assert all(call.status.code == Status.STATUS_CODE_ERROR for call in calls)
    assert all(call.parent_span_id == plan.span_id for call in calls)


async def test_down_receiver_does_not_fail_requests(
    azure_simulator: SimulatorHarness,
    tmp_path: Path,
    header_token: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    endpoint = unused_endpoint()
    settings = settings_for(azure_simulator, tmp_path, endpoint, header_token, export_timeout_s=0.5)

    async with running(settings) as runtime:
        exporter = runtime.trace_exporter
        assert isinstance(exporter, OtlpTraceExporter)
        first = await runtime.service.generate(REQUEST)
        await exporter.flush()
        second = await runtime.service.generate(REQUEST)
        await exporter.flush()
        stored = [await runtime.store.get_request(o.request_id) for o in (first, second)]

    assert [request.status for request in stored] == [RequestStatus.SUCCEEDED] * 2
    warnings = [record for record in caplog.records if record.levelno >= logging.WARNING]
    assert [record.name for record in warnings] == ["microtopic.observability.otel"]
    assert endpoint in warnings[0].getMessage()
    assert "spans were dropped" in warnings[0].getMessage()
    assert not [record for record in caplog.records if record.name.startswith("opentelemetry")]
    assert not [record for record in caplog.records if record.exc_info]
    assert header_token not in caplog.text


async def test_app_exports_trace_under_request_id(
    azure_simulator: SimulatorHarness, receiver: OtlpReceiver, tmp_path: Path, header_token: str
) -> None:
    settings = settings_for(azure_simulator, tmp_path, receiver.endpoint, header_token)
    request_id = uuid.uuid4().hex

    with AppServer(settings) as server:
        async with httpx.AsyncClient(base_url=server.base_url) as client:
            response = await client.post(
                GENERATE_PATH, json=CLIENT_BODY, headers={"X-Request-ID": request_id}
            )

    assert response.status_code == 200
    spans = receiver.spans()
    roots = [span for span in spans if not span.parent_span_id]
    assert [attributes(root)["microtopic.request_id"] for root in roots] == [request_id]
    assert {span.trace_id for span in spans} == {bytes.fromhex(request_id)}
    assert "validate request" in {span.name for span in spans}


@pytest.mark.parametrize(
    ("request_id", "trace_id"),
    [
        ("4f2a9c0e8b7d4e1f9a3b5c6d7e8f9012", 0x4F2A9C0E8B7D4E1F9A3B5C6D7E8F9012),
        ("4f2a9c0e-8b7d-4e1f-9a3b-5c6d7e8f9012", 0x4F2A9C0E8B7D4E1F9A3B5C6D7E8F9012),
        ("client-chosen-id-1", None),
        ("0" * 32, None),
    ],
)
def test_trace_id_comes_from_uuid_request_id(request_id: str, trace_id: int | None) -> None:
    assert trace_id_of(request_id) == trace_id
