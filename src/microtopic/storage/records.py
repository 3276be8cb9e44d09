"""Plain records that the store reads and writes, free of database types.

Every datetime here is timezone-aware: the records reject naive datetimes
because a stored time without an offset cannot be compared across hosts.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from microtopic.domain import GeneratedTopic

SUCCESS_OUTCOME = "success"
"""The `outcome` of an LLM call that returned a completion. A failed call stores its error code."""


class RequestStatus(StrEnum):
    """The stage of a generation request: running, then succeeded or failed, exactly once."""

    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


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
    """One timed step of the pipeline, such as the planner or one writer."""

    name: str
    started_at: datetime
    finished_at: datetime

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
    code, such as "upstream_rate_limited".
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
