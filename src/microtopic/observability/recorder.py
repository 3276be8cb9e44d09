"""A gateway observer that feeds every LLM call into the performance stats."""

from __future__ import annotations

from microtopic.gateway.events import CallEvent
from microtopic.observability.performance import PerformanceStats


class CallStatsRecorder:
    """Records each call as `llm_call` and `llm_call:<key name>`."""

    def __init__(self, stats: PerformanceStats) -> None:
        self._stats = stats

    def on_call_completed(self, event: CallEvent) -> None:
        self._record(event)

    def on_call_failed(self, event: CallEvent) -> None:
        self._record(event)

    def _record(self, event: CallEvent) -> None:
        self._stats.record("llm_call", event.latency_ms, ok=event.succeeded)
        self._stats.record(f"llm_call:{event.key_name}", event.latency_ms, ok=event.succeeded)
