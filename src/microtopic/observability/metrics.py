"""The service's Prometheus metrics, in a registry that the runtime owns.

Histograms and counters are recorded as things happen. The metrics middleware
records HTTP requests and the error codes that the error handlers leave, and
the generation service records generations and pipeline stages. LLM calls and
tokens arrive through this object's gateway observer methods, which the runtime
calls through a `DeferredObserver`, a loop turn after each call. The key
pool's state (key states, circuits, cooldowns, quota windows, queue and calls
in flight) is read when Prometheus scrapes, by `PoolCollector`, so nothing is
updated on every change. The cache and the job queue record through
`cache_lookup` and `job_items`.

Every label value comes from a bounded set: route templates (never raw paths),
HTTP methods, status classes, key names from the config, error codes from
`microtopic.errors` and the HTTP error table, pipeline stage names, and the fixed
states below. Request ids and user text are never labels. docs/observability.md
lists every metric.

The counters live here, not on the pool's keys, so they keep counting across a
rebuild of the pool. A key that leaves the config keeps its last values until
the process restarts.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from enum import StrEnum
from typing import TYPE_CHECKING, Generic, TypeVar

from prometheus_client import (
    CollectorRegistry,
    Counter,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.core import GaugeMetricFamily, Metric

from microtopic.gateway.events import CallEvent
from microtopic.keypool.breaker import CircuitState
from microtopic.keypool.key import KeyState
from microtopic.keypool.quota import QuotaSnapshot

if TYPE_CHECKING:
    from microtopic.gateway import Gateway

# Upper bounds of the histogram buckets, in seconds.
HTTP_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
LLM_CALL_BUCKETS_S = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0, 60.0, 120.0, 300.0)
GENERATION_BUCKETS_S = (0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0)

HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
STATUS_CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx")
# The route label of a request that matched no route, such as a 404.
UNMATCHED_ROUTE = "unmatched"
# States a job's items pass through; `job_items` accepts only these.
JOB_ITEM_STATES = frozenset({"queued", "running", "succeeded", "failed", "cancelled"})

M = TypeVar("M", Counter, Histogram)


class _Children(Generic[M]):
    """A metric's children by label values, looked up without `labels()`.

    `labels()` takes a lock and checks its arguments on every call. Once a label
    set has been seen, this is one dictionary lookup.
    """

    def __init__(self, metric: M) -> None:
        self._metric: M = metric
        self._children: dict[tuple[str, ...], M] = {}

    def get(self, *labels: str) -> M:
        child = self._children.get(labels)
        if child is None:
            child = self._children[labels] = self._metric.labels(*labels)
        return child


class Metrics:
    """Counters and histograms of the service, and the registry that exposes them.

    It is also a gateway observer (`on_call_completed`, `on_call_failed`). Every
    method is quick, holds no lock across an await and formats no string once a
    label set has been seen.
    """

    def __init__(self) -> None:
        self.registry = registry = CollectorRegistry()
        for collector in (ProcessCollector, PlatformCollector, GCCollector):
            collector(registry=registry)
        self._http = _histogram(
            registry,
            "microtopic_http_request_duration_seconds",
            "HTTP requests to the service and their duration, by route template.",
            ("method", "route", "status_class"),
            HTTP_BUCKETS_S,
        )
        self._generation = _histogram(
            registry,
            "microtopic_generation_duration_seconds",
            "Generations of a topic and their duration, by outcome (success or error code).",
            ("outcome",),
            GENERATION_BUCKETS_S,
        )
        self._stage = _histogram(
            registry,
            "microtopic_pipeline_stage_duration_seconds",
            "Successful pipeline steps and their duration, by stage (plan, write, quiz).",
            ("stage",),
            LLM_CALL_BUCKETS_S,
        )
        self._llm_call = _histogram(
            registry,
            "microtopic_llm_call_duration_seconds",
            "Attempts of LLM calls and their duration, by key and outcome (success or code).",
            ("key", "outcome"),
            LLM_CALL_BUCKETS_S,
        )
        self._tokens = _counter(
            registry,
            "microtopic_llm_tokens",
            "Tokens of successful LLM calls as the provider reported them, by key and type.",
            ("key", "type"),
        )
        self._errors = _counter(
            registry,
            "microtopic_errors",
            "Error responses of the HTTP API, by stable error code.",
            ("code",),
        )
        self._cache = _counter(
            registry,
            "microtopic_cache_lookups",
            "Lookups in the content cache, by result (hit or miss).",
            ("result",),
        )
        self._job_items = _counter(
            registry,
            "microtopic_job_items",
            "Items of background jobs that reached a state, by state.",
            ("state",),
        )

    def watch(self, gateway: Gateway) -> None:
        """Expose the queue of `gateway` and the state of its pool's keys at each scrape."""
        self.registry.register(PoolCollector(gateway))

    def on_call_completed(self, event: CallEvent) -> None:
        self._llm_call.get(event.key_name, event.outcome).observe(event.latency_ms / 1000)
        self._tokens.get(event.key_name, "prompt").inc(event.prompt_tokens)
        self._tokens.get(event.key_name, "completion").inc(event.completion_tokens)

    def on_call_failed(self, event: CallEvent) -> None:
        self._llm_call.get(event.key_name, event.outcome).observe(event.latency_ms / 1000)

    def http_request(self, method: str, route: str, status: int, duration_s: float) -> None:
        """Record one HTTP request; `route` is the template, such as `/keys/{name}/enable`."""
        if method not in HTTP_METHODS:
            method = "other"
        status_class = STATUS_CLASSES[min(max(status // 100, 1), 5) - 1]
        self._http.get(method, route, status_class).observe(duration_s)

    def generation(self, duration_ms: float, outcome: str) -> None:
        """Record one generation; `outcome` is "success" or the error's code."""
        self._generation.get(outcome).observe(duration_ms / 1000)

    def stage(self, stage: str, duration_ms: float) -> None:
        """Record one pipeline step of `stage`, such as "write"."""
        self._stage.get(stage).observe(duration_ms / 1000)

    def error(self, code: str) -> None:
        """Count one error response with the stable `code`."""
        self._errors.get(code).inc()

    def cache_lookup(self, *, hit: bool) -> None:
        """Count one lookup in the content cache."""
        self._cache.get("hit" if hit else "miss").inc()

    def job_items(self, state: str, count: int = 1) -> None:
        """Count `count` items of a background job that reached `state`.

        Raises `ValueError` for a state outside `JOB_ITEM_STATES`, which keeps the
        label set bounded.
        """
        if state not in JOB_ITEM_STATES:
            raise ValueError(f"job item state must be one of {sorted(JOB_ITEM_STATES)}: {state!r}")
        if count < 0:
            raise ValueError(f"job item count must not be negative: {count}")
        self._job_items.get(state).inc(count)


class PoolCollector:
    """Reads the gateway's queue and each key's state when Prometheus scrapes.

    It runs inside `generate_latest`, which the `/metrics` route calls on the event
    loop, so it reads the pool without racing its updates.
    """

    def __init__(self, gateway: Gateway, clock: Callable[[], float] = time.monotonic) -> None:
        self._gateway = gateway
        self._clock = clock

    def describe(self) -> list[Metric]:
        # Returning nothing keeps the registry from calling `collect` when it registers us.
        return []

    def collect(self) -> Iterator[Metric]:
        yield from self._gateway_metrics()
        yield from self._key_metrics(self._clock())

    def _gateway_metrics(self) -> Iterator[Metric]:
        capacity = self._gateway.capacity()
        figures = (
            ("active_calls", "LLM calls in flight.", capacity.active_requests),
            (
                "max_concurrent_calls",
                "The cap on calls in flight.",
                capacity.max_concurrent_requests,
            ),
            ("queued_calls", "LLM calls waiting for a key.", capacity.queued_requests),
            ("max_queue_size", "The most calls that may wait.", capacity.max_queue_size),
        )
        for name, documentation, value in figures:
            yield GaugeMetricFamily(f"microtopic_gateway_{name}", documentation, value=value)

    def _key_metrics(self, now: float) -> Iterator[Metric]:
        keys = self._gateway.pool.keys
        state = _gauge("state", "1 for the key's current state, 0 for the others.", "state")
        circuit = _gauge("circuit_state", "1 for the state of the key's circuit breaker.", "state")
        cooldown = _gauge("cooldown_remaining_seconds", "Seconds until a cooling key returns.")
        active = _gauge("active_calls", "LLM calls in flight on the key.")
        quota = {
            name: _gauge(name, documentation)
            for name, documentation in (
                ("requests_used", "Requests charged in the key's current request window."),
                ("requests_remaining", "Requests the key's request window still admits."),
                ("requests_limit", "Requests the key's request window admits in all."),
                ("tokens_used", "Tokens charged in the key's current token window."),
                ("tokens_remaining", "Tokens the key's token window still admits."),
                ("tokens_limit", "Tokens the key's token window admits in all."),
            )
        }
        for key in keys:
            _add_one_hot(state, key.name, key.state(now), KeyState)
            _add_one_hot(circuit, key.name, key.breaker.state(now), CircuitState)
            cooldown.add_metric([key.name], max(0.0, key.cooldown_until - now))
            active.add_metric([key.name], key.active_calls)
            _add_quota(quota, key.name, key.quota.snapshot(now))
        yield from (state, circuit, cooldown, active, *quota.values())


def _histogram(
    registry: CollectorRegistry,
    name: str,
    documentation: str,
    labels: tuple[str, ...],
    buckets: tuple[float, ...],
) -> _Children[Histogram]:
    return _Children(Histogram(name, documentation, labels, buckets=buckets, registry=registry))


def _counter(
    registry: CollectorRegistry, name: str, documentation: str, labels: tuple[str, ...]
) -> _Children[Counter]:
    return _Children(Counter(name, documentation, labels, registry=registry))


def _gauge(name: str, documentation: str, *extra_labels: str) -> GaugeMetricFamily:
    return GaugeMetricFamily(f"microtopic_key_{name}", documentation, labels=["key", *extra_labels])


def _add_one_hot(
    gauge: GaugeMetricFamily, key_name: str, current: StrEnum, states: type[StrEnum]
) -> None:
    # One sample per possible state, 1 for the current one, so a query can sum or alert on it.
    for state in states:
        gauge.add_metric([key_name, state.value], 1.0 if state is current else 0.0)


def _add_quota(
    gauges: dict[str, GaugeMetricFamily], key_name: str, snapshot: QuotaSnapshot
) -> None:
    # Only the windows a key declares are exposed: a key without a limit has no "remaining".
    windows = (
        ("requests", snapshot.requests_limit, snapshot.requests_used),
        ("tokens", snapshot.tokens_limit, snapshot.tokens_used),
    )
    for prefix, limit, used in windows:
        if limit is None:
            continue
        gauges[f"{prefix}_used"].add_metric([key_name], used)
        gauges[f"{prefix}_remaining"].add_metric([key_name], max(0, limit - used))
        gauges[f"{prefix}_limit"].add_metric([key_name], limit)
