"""`microtopic trace`: a request's trace as a text waterfall, from the database or a service."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from microtopic.api.trace_schemas import RequestSummaryOut, SpanOut, TraceResponse
from microtopic.cli.trace import tree_order, waterfall_lines
from microtopic.config import load_settings
from microtopic.simulator import SimulatorServer
from tests.api.support import CLIENT_BODY, GENERATE_PATH
from tests.app_server import AppServer
from tests.cli.support import Cli, one_line

TOPIC_ARGS = ("generate", "--subject", "Mathematics", "--topic", "Linear equations")
T0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def set_fault(simulator: SimulatorServer, key_name: str, kind: str) -> None:
    response = httpx.put(
        f"{simulator.base_url}/_simulator/keys/{key_name}/fault", json={"kind": kind}
    )
    response.raise_for_status()


def request_id_of(stderr: str) -> str:
    match = re.search(r"request ([0-9a-f]{32}):", stderr)
    assert match is not None, stderr
    return match.group(1)


def make_span(
    span_id: int, parent_id: int | None, offset_ms: float, duration_ms: float, **attributes: str
) -> SpanOut:
    return SpanOut(
        span_id=span_id,
        parent_id=parent_id,
        name=f"span {span_id}",
        kind="llm_call" if "outcome" in attributes else "step",
        started_at=T0,
        finished_at=T0,
        offset_ms=offset_ms,
        duration_ms=duration_ms,
        attributes=dict(attributes),
    )


def make_trace(spans: list[SpanOut], duration_ms: float = 100.0) -> TraceResponse:
    request = RequestSummaryOut(
        id="a" * 32,
        kind="generation",
        course_id="cli",
        subject_name="Mathematics",
        topic_name="Linear equations",
        requested_model=None,
        max_tokens=None,
        message_count=None,
        status="succeeded",
        error_code=None,
        error_message=None,
        created_at=T0,
        finished_at=T0,
        duration_ms=100,
        keys=["east", "west"],
        llm_calls=2,
        failed_calls=1,
    )
    return TraceResponse(request=request, started_at=T0, duration_ms=duration_ms, spans=spans)


@pytest.fixture
def app_server(config_file: Path) -> Iterator[AppServer]:
    with AppServer(load_settings(config_file)) as server:
        yield server


def test_trace_of_cli_run_is_read_from_database(
    cli: Cli, config_file: Path, simulator: SimulatorServer
) -> None:
    set_fault(simulator, "west", "revoked")
    generated = cli.run(*TOPIC_ARGS, "-m", "Slope", "--config", str(config_file))
    request_id = request_id_of(generated.stderr)

    result = cli.run("trace", request_id, "--config", str(config_file))

    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"request {request_id}: succeeded in ")
    assert lines[1] == "topic: Mathematics / Linear equations"
    assert any("store request [storage]" in line for line in lines)
    assert any("write:1 [step]" in line for line in lines)
    assert any("attempt 1 on west [llm_call, upstream_auth_failed]" in line for line in lines)
    assert any("attempt 2 on " in line and "success]" in line for line in lines)
    assert lines[-1].endswith("store outcome [storage]")


def test_trace_is_read_from_server(cli: Cli, app_server: AppServer) -> None:
    generated = httpx.post(app_server.base_url + GENERATE_PATH, json=CLIENT_BODY, timeout=30.0)
    request_id = generated.json()["metadata"]["request_id"]

    result = cli.run("trace", request_id, "--server", app_server.base_url)

    assert result.exit_code == 0, result.stderr
    assert "topic: Math / Algebra" in result.stdout
    assert "validate request [validation]" in result.stdout
    assert "key selection [key_selection, key " in result.stdout


def test_unknown_request_fails_with_code(cli: Cli, config_file: Path) -> None:
    result = cli.run("trace", "0" * 32, "--config", str(config_file))

    assert result.exit_code == 1
    assert one_line(result.stderr).startswith("error [not_found]: No request has the id")


def test_waterfall_names_forwarded_call() -> None:
    trace = make_trace([make_span(1, None, 0, 100)])
    forwarded = trace.request.model_copy(
        update={
            "kind": "passthrough",
            "course_id": None,
            "subject_name": None,
            "topic_name": None,
            "requested_model": "gpt-4o-mini",
            "message_count": 3,
        }
    )

    lines = waterfall_lines(trace.model_copy(update={"request": forwarded}))

    assert lines[1] == "forwarded call: model gpt-4o-mini, 3 messages, max_tokens not set"


def test_waterfall_places_bars_on_timeline() -> None:
    trace = make_trace([make_span(1, None, 0.0, 50.0), make_span(2, 1, 50.0, 50.0)])

    lines = waterfall_lines(trace, width=10)

    first, second = lines[-2:]
    assert "|█████     |  span 1 [step]" in first
    assert "|     █████|    span 2 [step]" in second


def test_waterfall_shows_short_span_and_error() -> None:
    failed = make_span(2, 1, 99.9, 0.01, outcome="upstream_auth_failed")
    trace = make_trace([make_span(1, None, 0.0, 100.0), failed])

    last = waterfall_lines(trace, width=10)[-1]

    assert "|         █|" in last
    assert last.endswith("span 2 [llm_call, upstream_auth_failed]")


def test_tree_order_puts_children_under_parents() -> None:
    spans = [
        make_span(3, 1, 20.0, 5.0),
        make_span(1, None, 0.0, 50.0),
        make_span(4, None, 60.0, 10.0),
        make_span(2, 1, 10.0, 5.0),
        make_span(5, 99, 70.0, 1.0),  # its parent is missing, so it is at the top
    ]

    ordered = [(span.span_id, depth) for span, depth in tree_order(spans)]

    assert ordered == [(1, 0), (2, 1), (3, 1), (4, 0), (5, 0)]
