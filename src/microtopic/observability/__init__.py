"""Observability: performance stats of operations and of every LLM call."""

from microtopic.observability.calls import RequestCallLog
from microtopic.observability.performance import OperationStats, PerformanceStats
from microtopic.observability.recorder import CallStatsRecorder

__all__ = ["CallStatsRecorder", "OperationStats", "PerformanceStats", "RequestCallLog"]
