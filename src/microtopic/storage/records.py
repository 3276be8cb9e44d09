"""Plain records that the store reads and writes, free of database types.

Every datetime here is timezone-aware: the records reject naive datetimes
because a stored time without an offset cannot be compared across hosts.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum

from microtopic.domain import GeneratedTopic

SUCCESS_OUTCOME = "success"
"""The `outcome` of an LLM call that returned a completion. A failed call stores its error code."""

# The kinds of the spans that the store builds from steps, LLM calls and its own write.
# They are values of `microtopic.observability.tracing.SpanKind`, which storage does not import.
STEP_SPAN_KIND = "step"
LLM_CALL_SPAN_KIND = "llm_call"
STORAGE_SPAN_KIND = "storage"

SpanAttributes = Mapping[str, str | int | float | bool | None]


class RequestStatus(StrEnum):
    """The stage of a generation request: running, then succeeded or failed, exactly once."""

    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class RequestKind(StrEnum):
    """The kind of a stored request: a lesson generation, or a client's call forwarded to a key."""

    GENERATION = "generation"
    PASSTHROUGH = "passthrough"


def require_aware(value: datetime, name: str) -> None:
    """Raise `ValueError` when `value` is a naive datetime."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be a timezone-aware datetime, got the naive {value}")


def truncate(text: str, max_length: int) -> str:
    """Return `text`, cut to `max_length` characters with an ellipsis when it is longer."""
    if len(text) <= max_length:
        return text
    return text[: max_length - 1] + "…"


def milliseconds_between(start: datetime, end: datetime) -> int:
    """Return the time from `start` to `end` in whole milliseconds, rounded."""
    return round((end - start) / timedelta(milliseconds=1))


@dataclass(frozen=True)
class StepRecord:
    """One timed step of the pipeline, such as the planner or one writer.

    `span_id` and `parent_id` place the step in the request's trace. They are None
    for a step recorded without a trace, and for steps stored before traces existed.
    `error` is the code of the error that ended the step, for a failed request.
    """

    name: str
    started_at: datetime
    finished_at: datetime
    span_id: int | None = None
    parent_id: int | None = None
    error: str | None = None

    def __post_init__(self) -> None:
        require_aware(self.started_at, "StepRecord.started_at")
        require_aware(self.finished_at, "StepRecord.finished_at")

    @property
    def duration_ms(self) -> int:
        """Time the step took, in whole milliseconds."""
        return milliseconds_between(self.started_at, self.finished_at)


@dataclass(frozen=True)
class LlmCallRecord:
    """One attempt to get a completion from one key.

    `attempt` counts from 1 across all keys tried for the same step. Token counts
    are 0 when the call failed, and `outcome` is `SUCCESS_OUTCOME` or the error's
    code, such as "upstream_rate_limited". `span_id` and `parent_id` place the call
    in the request's trace, like a step's.
    """

    step: str
    key_name: str
    deployment: str
    attempt: int
    latency_ms: float
    prompt_tokens: int
    completion_tokens: int
    outcome: str
    started_at: datetime
    span_id: int | None = None
    parent_id: int | None = None

    def __post_init__(self) -> None:
        require_aware(self.started_at, "LlmCallRecord.started_at")

    @property
    def succeeded(self) -> bool:
        """Whether the call returned a completion."""
        return self.outcome == SUCCESS_OUTCOME


@dataclass(frozen=True)
class KeyUsage:
    """Calls made with one key: successes, failures and the start of the latest call."""

    key_name: str
    usage_count: int
    error_count: int
    last_used: datetime | None


@dataclass(frozen=True)
class StoredRequest:
    """A generation request as stored, with its topic when it succeeded and its calls.

    `duration_ms` runs from `created_at` to `finished_at` in whole milliseconds,
    and is None, like `finished_at`, while the request is running. `steps` is
    empty until the request is finished.
    """

    id: str
    course_id: str
    subject_name: str
    topic_name: str
    status: RequestStatus
    error_code: str | None
    error_message: str | None
    created_at: datetime
    finished_at: datetime | None
    duration_ms: int | None
    steps: list[StepRecord]
    topic: GeneratedTopic | None
    calls: list[LlmCallRecord]


@dataclass(frozen=True)
class SpanRecord:
    """One span of a request's trace: a timed piece of its work and where it belongs.

    `span_id` is unique within the request, and `parent_id` is the span that
    contains this one, or None at the top. `kind` is a `SpanKind` value of
    `microtopic.observability.tracing`, such as "queue" or "llm_call". `attributes`
    hold key names, numbers, flags and error codes, never prompts or completions.
    """

    span_id: int
    parent_id: int | None
    name: str
    kind: str
    started_at: datetime
    finished_at: datetime
    attributes: SpanAttributes = field(default_factory=dict)

    def __post_init__(self) -> None:
        require_aware(self.started_at, "SpanRecord.started_at")
        require_aware(self.finished_at, "SpanRecord.finished_at")

    @property
    def duration_ms(self) -> float:
        """Time the span took, in milliseconds."""
        return (self.finished_at - self.started_at) / timedelta(milliseconds=1)


@dataclass(frozen=True)
class ForwardedCall:
    """A client's call forwarded through the passthrough, as stored: no prompt, no reply.

    `requested_model` is the model or deployment the client named, `max_tokens` its
    limit if it set one (`max_tokens` or `max_completion_tokens`), and
    `message_count` the number of messages it sent. `error_code` and
    `error_message` are the service's own, None for a success.
    """

    request_id: str
    requested_model: str | None
    max_tokens: int | None
    message_count: int
    created_at: datetime
    finished_at: datetime
    error_code: str | None = None
    error_message: str | None = None

    def __post_init__(self) -> None:
        require_aware(self.created_at, "ForwardedCall.created_at")
        require_aware(self.finished_at, "ForwardedCall.finished_at")

    @property
    def status(self) -> RequestStatus:
        return RequestStatus.SUCCEEDED if self.error_code is None else RequestStatus.FAILED


@dataclass(frozen=True)
class RequestSummary:
    """A request as the list of recent requests shows it, without its topic.

    A generation has its course, subject and topic, and None for the forwarded
    call's fields; a forwarded call (`RequestKind.PASSTHROUGH`) has the reverse.
    `keys` are the keys its LLM calls went to, sorted. `llm_calls` counts every
    attempt, and `failed_calls` those that did not return a completion.
    """

    id: str
    kind: RequestKind
    course_id: str | None
    subject_name: str | None
    topic_name: str | None
    requested_model: str | None
    max_tokens: int | None
    message_count: int | None
    status: RequestStatus
    error_code: str | None
    error_message: str | None
    created_at: datetime
    finished_at: datetime | None
    duration_ms: int | None
    keys: list[str]
    llm_calls: int
    failed_calls: int


@dataclass(frozen=True)
class StoredTrace:
    """A request and every span of its trace, ordered by start."""

    request: RequestSummary
    spans: list[SpanRecord]
