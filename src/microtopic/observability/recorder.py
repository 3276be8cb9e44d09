"""A gateway observer that feeds every LLM call into the performance stats."""

from __future__ import annotations

from microtopic.gateway.events import CallEvent
from microtopic.observability.performance import PerformanceStats


class CallStatsRecorder:
    """Records each call as `llm_call` and `llm_call:<key name>`."""

    def __init__(self, stats: PerformanceStats) -> None:
        self._stats = stats
        # Built once per key, so recording a call formats no string.
        self._key_operations: dict[str, str] = {}

    def on_call_completed(self, event: CallEvent) -> None:
        self._record(event)

    def on_call_failed(self, event: CallEvent) -> None:
        self._record(event)

    def _record(self, event: CallEvent) -> None:
        operation = self._key_operations.get(event.key_name)
        if operation is None:
            operation = self._key_operations[event.key_name] = f"llm_call:{event.key_name}"
        ok = event.succeeded
        self._stats.record("llm_call", event.latency_ms, ok=ok)
        self._stats.record(operation, event.latency_ms, ok=ok)
