"""Request traces: timed spans that a request collects in memory while it runs.

A `Trace` collects the spans of one request. The generation service makes it the
`current_trace` (a context variable), so the pipeline, the cache and the gateway
record spans without being passed anything. asyncio copies the context into each
task a request starts, so the microtopics written in parallel record into the same
trace, each under its own parent (`current_span_id`).

A span costs two monotonic clock reads, one small object and a list append.
Nothing is written while the request runs: the service stores the spans with the
request's outcome, in one transaction. Without a current trace (a health check,
a forwarded call, a benchmark run) `span` records nothing.

An LLM attempt is stored as its `llm_calls` row, so it is not collected here: it
only takes an id and a parent (`child_ids`), which the row keeps.

Attributes hold key names, numbers, flags and error codes, never prompts,
completions or other user text.
"""

from __future__ import annotations

import asyncio
from contextvars import ContextVar, Token
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from time import monotonic
from types import TracebackType

from microtopic.errors import MicrotopicError

AttributeValue = str | int | float | bool | None


class SpanKind(StrEnum):
    """The kind of work a span times. The dashboard colours spans by kind."""

    VALIDATION = "validation"  # the request body, or a model's reply against its schema
    STORAGE = "storage"  # a write of the request's rows
    CACHE = "cache"  # a content cache lookup, or a wait for an identical request
    STEP = "step"  # a pipeline step: plan, write:N, quiz:N
    REPAIR = "repair"  # a repair of an invalid reply, or a rewrite the reviewer asked for
    KEY_SELECTION = "key_selection"  # the pool admitting one attempt to a key
    QUEUE = "queue"  # time an attempt waited in the pool's queue for a key
    LLM_CALL = "llm_call"  # one attempt on one key


@dataclass(slots=True, eq=False)
class Span:
    """One timed piece of a request, with `start` and `end` on the monotonic clock.

    A span with `span_id` 0 belongs to no trace: setting its attributes does nothing.
    """

    span_id: int
    parent_id: int | None
    name: str
    kind: SpanKind
    start: float
    end: float = 0.0
    attributes: dict[str, AttributeValue] = field(default_factory=dict)

    def set(self, name: str, value: AttributeValue) -> None:
        """Set one attribute, unless the span belongs to no trace."""
        if self.span_id:
            self.attributes[name] = value

    @property
    def duration_ms(self) -> float:
        return (self.end - self.start) * 1000


class Trace:
    """The spans of one request, and the moment it started on both clocks.

    `started_at` (wall clock) and `started` (monotonic clock) are read together, so
    `wall_time` turns any monotonic time of the request into a datetime.
    """

    __slots__ = ("_next_id", "spans", "started", "started_at")

    def __init__(self) -> None:
        self.started_at = datetime.now(UTC)
        self.started = monotonic()
        self.spans: list[Span] = []
        self._next_id = 1

    def new_id(self) -> int:
        span_id = self._next_id
        self._next_id += 1
        return span_id

    def add(
        self,
        name: str,
        kind: SpanKind,
        start: float,
        end: float,
        *,
        parent_id: int | None = None,
        attributes: dict[str, AttributeValue] | None = None,
    ) -> Span:
        """Collect a span whose times are already known, such as a wait the pool measured."""
        span = Span(self.new_id(), parent_id, name, kind, start, end, attributes or {})
        self.spans.append(span)
        return span

    def wall_time(self, at: float) -> datetime:
        """Return the datetime of the monotonic time `at`."""
        return self.started_at + timedelta(seconds=at - self.started)


current_trace: ContextVar[Trace | None] = ContextVar("microtopic_trace", default=None)
current_span_id: ContextVar[int | None] = ContextVar("microtopic_span_id", default=None)

# Returned by `span` when no trace is current. Its attributes are never set.
_NO_SPAN = Span(0, None, "", SpanKind.STEP, 0.0)


# Lower case because it is used like a function: `with span(...) as current:`.
class span:
    """Time the block as a span of the current trace, the parent of the spans opened in it.

    When the block raises, the span's `error` attribute is the error's stable code,
    `cancelled`, or the exception's type name.
    """

    __slots__ = ("_span", "_token", "_trace")

    def __init__(
        self, name: str, kind: SpanKind, attributes: dict[str, AttributeValue] | None = None
    ) -> None:
        self._trace = trace = current_trace.get()
        self._token: Token[int | None] | None = None
        if trace is None:
            self._span = _NO_SPAN
            return
        parent_id = current_span_id.get()
        self._span = Span(trace.new_id(), parent_id, name, kind, 0.0, 0.0, attributes or {})

    def __enter__(self) -> Span:
        current = self._span
        if self._trace is None:
            return current
        current.start = monotonic()
        self._token = current_span_id.set(current.span_id)
        return current

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._trace is None or self._token is None:
            return
        current = self._span
        current.end = monotonic()
        current_span_id.reset(self._token)
        if exc is not None:
            current.attributes["error"] = error_class(exc)
        self._trace.spans.append(current)


def record_span(
    name: str,
    kind: SpanKind,
    start: float,
    end: float,
    *,
    parent_id: int | None = None,
    attributes: dict[str, AttributeValue] | None = None,
) -> None:
    """Collect a span whose times are already known into the current trace, if there is one."""
    trace = current_trace.get()
    if trace is not None:
        trace.add(name, kind, start, end, parent_id=parent_id, attributes=attributes)


def child_ids() -> tuple[int | None, int | None]:
    """Return a new span id in the current trace and its parent's id; (None, None) without one.

    For a span stored outside the trace: an LLM attempt's `llm_calls` row.
    """
    trace = current_trace.get()
    if trace is None:
        return None, None
    return trace.new_id(), current_span_id.get()


def error_class(exc: BaseException) -> str:
    """Return the stable code of a Microtopic error, `cancelled`, or the exception's type name."""
    if isinstance(exc, MicrotopicError):
        return exc.code
    if isinstance(exc, asyncio.CancelledError):
        return "cancelled"
    return type(exc).__name__
