"""Parts shared by the observability tests: a clock moved by hand, and gateway call events."""

from __future__ import annotations

from datetime import UTC, datetime

from microtopic.gateway import CallContext, CallEvent


class FakeClock:
    """A monotonic clock that tests move by hand."""

    def __init__(self) -> None:
        self.now_s = 1000.0

    def __call__(self) -> float:
        return self.now_s

    def advance(self, seconds: float) -> None:
        self.now_s += seconds


def call_event(key_name: str, outcome: str = "success", latency_ms: float = 120.0) -> CallEvent:
    """Return the event of one attempt on `key_name`; a failed one has no tokens."""
    succeeded = outcome == "success"
    return CallEvent(
        context=CallContext(request_id="req-1", step="plan"),
        key_name=key_name,
        deployment="gpt-4o-mini",
        attempt=1,
        started_at=datetime.now(UTC),
        latency_ms=latency_ms,
        prompt_tokens=100 if succeeded else 0,
        completion_tokens=40 if succeeded else 0,
        outcome=outcome,
    )
