"""`microtopic trace`: one request's trace as a text waterfall.

The trace comes from a running service (`--server`), or else from the database of
the config, where `microtopic generate` stores its runs.
"""

from __future__ import annotations

from urllib.parse import quote

from microtopic.api.trace_schemas import RequestSummaryOut, SpanOut, TraceResponse
from microtopic.cli.remote import call_service
from microtopic.config import Settings
from microtopic.observability.retention import TracePruner
from microtopic.storage import Database, RequestKind, TraceStore

REQUESTS_PATH = "/api/v1/microtopic-content/requests"
BAR_WIDTH = 40


async def load_trace(settings: Settings, server: str | None, request_id: str) -> TraceResponse:
    """Return the trace of `request_id` from the service at `server`, or else the database."""
    if server:
        path = f"{REQUESTS_PATH}/{quote(request_id, safe='')}/trace"
        return await call_service("GET", server, path, TraceResponse, timeout_s=10.0)

    database = Database(settings.database_url, setting=settings.database_url_setting)
    try:
        await database.upgrade()
        traces = TraceStore(database)
        oldest_kept = TracePruner(traces, settings.traces).oldest_kept()
        trace = await traces.get_trace(request_id, not_before=oldest_kept)
    finally:
        await database.dispose()
    return TraceResponse.from_trace(trace)


def waterfall_lines(trace: TraceResponse, width: int = BAR_WIDTH) -> list[str]:
    """Return the trace as lines of text: a summary, then one line per span, parents first.

    Each span's line gives its start and duration in milliseconds, a bar that places
    it on the trace's timeline `width` characters wide, and its name, indented
    under its parent, with its key, attempt and error.
    """
    request = trace.request
    outcome = request.status if request.error_code is None else f"failed ({request.error_code})"
    keys = ", ".join(request.keys) or "no key"
    lines = [
        f"request {request.id}: {outcome} in {trace.duration_ms:.0f} ms, "
        f"{request.llm_calls} LLM attempts on {keys}",
        _subject_line(request),
        "",
        f"{'start ms':>9} {'ms':>8}  {'timeline':<{width + 2}}  span",
    ]
    total_ms = max(trace.duration_ms, 0.001)
    for span, depth in tree_order(trace.spans):
        bar = _bar(span.offset_ms / total_ms, span.duration_ms / total_ms, width)
        label = "  " * depth + span.name + _details(span)
        lines.append(f"{span.offset_ms:>9.1f} {span.duration_ms:>8.1f}  |{bar}|  {label}")
    return lines


def _subject_line(request: RequestSummaryOut) -> str:
    if request.kind != RequestKind.PASSTHROUGH:
        return f"topic: {request.subject_name} / {request.topic_name}"
    max_tokens = "not set" if request.max_tokens is None else str(request.max_tokens)
    return (
        f"forwarded call: model {request.requested_model or 'not named'}, "
        f"{request.message_count} messages, max_tokens {max_tokens}"
    )


def tree_order(spans: list[SpanOut]) -> list[tuple[SpanOut, int]]:
    """Return each span with its depth, after its parent, siblings by start."""
    ids = {span.span_id for span in spans}
    children: dict[int | None, list[SpanOut]] = {}
    for span in spans:
        parent = span.parent_id if span.parent_id in ids else None
        children.setdefault(parent, []).append(span)

    ordered: list[tuple[SpanOut, int]] = []
    pending = [(span, 0) for span in reversed(_by_start(children.get(None, [])))]
    while pending:
        span, depth = pending.pop()
        ordered.append((span, depth))
        below = _by_start(children.get(span.span_id, []))
        pending.extend((child, depth + 1) for child in reversed(below))
    return ordered


def _by_start(spans: list[SpanOut]) -> list[SpanOut]:
    return sorted(spans, key=lambda span: (span.offset_ms, span.span_id))


def _bar(start: float, length: float, width: int) -> str:
    first = min(width - 1, int(start * width))
    cells = max(1, round(length * width))
    cells = min(cells, width - first)
    return " " * first + "█" * cells + " " * (width - first - cells)


def _details(span: SpanOut) -> str:
    attributes = span.attributes
    parts = [span.kind]
    if span.kind == "llm_call":
        parts.append(str(attributes.get("outcome")))
    elif attributes.get("key"):
        parts.append(f"key {attributes['key']}")
    error = attributes.get("error")
    if error and span.kind != "llm_call":
        parts.append(f"error {error}")
    if "hit" in attributes:
        parts.append("hit" if attributes["hit"] else "miss")
    return f" [{', '.join(parts)}]"
