"""Observability: performance and error stats, Prometheus metrics and request traces."""

from microtopic.observability.calls import RequestCallLog
from microtopic.observability.deferred import DeferredObserver
from microtopic.observability.error_stats import ErrorCounts, ErrorStats, ErrorWindows
from microtopic.observability.metrics import Metrics
from microtopic.observability.performance import (
    OperationStats,
    PerformanceStats,
    SlotStats,
    Timeline,
    WindowStats,
)
from microtopic.observability.recorder import CallStatsRecorder

__all__ = [
    "CallStatsRecorder",
    "DeferredObserver",
    "ErrorCounts",
    "ErrorStats",
    "ErrorWindows",
    "Metrics",
    "OperationStats",
    "PerformanceStats",
    "RequestCallLog",
    "SlotStats",
    "Timeline",
    "WindowStats",
]
