"""Observability: performance stats, Prometheus metrics and request traces."""

from microtopic.observability.calls import RequestCallLog
from microtopic.observability.deferred import DeferredObserver
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
    "Metrics",
    "OperationStats",
    "PerformanceStats",
    "RequestCallLog",
    "SlotStats",
    "Timeline",
    "WindowStats",
]
