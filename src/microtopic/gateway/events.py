"""The events the gateway sends its subscribers about each call."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol


@dataclass(frozen=True)
class CallContext:
    """Who a call is for: the request, its pipeline step, and whether the user retried.

    `deadline` is the request's overall deadline on the monotonic clock; without
    one, each call gets the gateway's `request_deadline_s` from when it starts.
    """

    request_id: str | None = None
    step: str = "call"
    is_retry: bool = False
    deadline: float | None = None

    def for_step(self, step: str) -> CallContext:
        """Return the same context for another step of the request."""
        return CallContext(self.request_id, step, self.is_retry, self.deadline)


@dataclass(frozen=True)
class CallEvent:
    """One attempt on one key, successful or not.

    `outcome` is "success" or the error's stable code, such as `upstream_rate_limited`.
    `span_id` and `parent_id` place the attempt in its request's trace; they are None
    when no trace was current (`microtopic.observability.tracing`).
    """

    context: CallContext
    key_name: str
    deployment: str
    attempt: int
    started_at: datetime
    latency_ms: float
    prompt_tokens: int
    completion_tokens: int
    outcome: str
    reason: str | None = None
    span_id: int | None = None
    parent_id: int | None = None

    @property
    def succeeded(self) -> bool:
        return self.outcome == "success"


class CallObserver(Protocol):
    """A subscriber to the gateway's calls. It must be quick and must not raise."""

    def on_call_completed(self, event: CallEvent) -> None: ...

    def on_call_failed(self, event: CallEvent) -> None: ...
