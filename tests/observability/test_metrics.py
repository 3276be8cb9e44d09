"""The Prometheus metrics recorded directly, and the pool gauges read from a real gateway."""

from __future__ import annotations

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from microtopic.gateway import CallContext
from microtopic.observability import Metrics
from microtopic.observability.metrics import JOB_ITEM_STATES
from tests.harness import KEY_NAMES, PLAN_REQUEST, SimulatorHarness
from tests.observability.support import call_event


def samples_of(metrics: Metrics) -> list[Sample]:
    text = generate_latest(metrics.registry).decode()
    return [sample for family in text_string_to_metric_families(text) for sample in family.samples]


def value(metrics: Metrics, name: str, **labels: str) -> float:
    return sum(
        sample.value
        for sample in samples_of(metrics)
        if sample.name == name and labels.items() <= sample.labels.items()
    )


def test_cache_lookups_count_hits_and_misses() -> None:
    metrics = Metrics()

    metrics.cache_lookup(hit=True)
    metrics.cache_lookup(hit=False)
    metrics.cache_lookup(hit=True)

    assert value(metrics, "microtopic_cache_lookups_total", result="hit") == 2
    assert value(metrics, "microtopic_cache_lookups_total", result="miss") == 1


def test_job_items_count_by_state() -> None:
    metrics = Metrics()

    metrics.job_items("queued", 12)
    metrics.job_items("succeeded", 5)
    metrics.job_items("succeeded")
    metrics.job_items("failed", 0)

    assert value(metrics, "microtopic_job_items_total", state="queued") == 12
    assert value(metrics, "microtopic_job_items_total", state="succeeded") == 6
    assert value(metrics, "microtopic_job_items_total", state="failed") == 0
    assert {"queued", "running", "succeeded", "failed", "cancelled"} == JOB_ITEM_STATES


def test_job_items_reject_unknown_state() -> None:
    metrics = Metrics()

    with pytest.raises(ValueError, match="'paused'"):
        metrics.job_items("paused", 1)
    with pytest.raises(ValueError, match="negative"):
        metrics.job_items("queued", -1)


def test_calls_feed_histogram_and_tokens() -> None:
    metrics = Metrics()

    metrics.on_call_completed(call_event("east", latency_ms=200.0))
    metrics.on_call_completed(call_event("east", latency_ms=400.0))
    metrics.on_call_failed(call_event("west", "upstream_rate_limited"))

    calls = "microtopic_llm_call_duration_seconds"
    assert value(metrics, f"{calls}_count", key="east", outcome="success") == 2
    assert value(metrics, f"{calls}_sum", key="east") == pytest.approx(0.6)
    assert value(metrics, f"{calls}_bucket", key="east", le="0.25") == 1
    assert value(metrics, f"{calls}_count", key="west", outcome="upstream_rate_limited") == 1
    assert value(metrics, "microtopic_llm_tokens_total", key="east", type="prompt") == 200
    assert value(metrics, "microtopic_llm_tokens_total", key="east", type="completion") == 80
    assert value(metrics, "microtopic_llm_tokens_total", key="west") == 0


def test_http_labels_stay_bounded() -> None:
    metrics = Metrics()

    metrics.http_request("BREW", "/healthz", 200, 0.001)
    metrics.http_request("GET", "/healthz", 499, 0.001)
    metrics.http_request("GET", "/healthz", 600, 0.001)
    metrics.http_request("GET", "/healthz", 101, 0.001)

    http = "microtopic_http_request_duration_seconds_count"
    assert value(metrics, http, method="other", status_class="2xx") == 1
    assert value(metrics, http, method="GET", status_class="4xx") == 1
    assert value(metrics, http, method="GET", status_class="5xx") == 1
    assert value(metrics, http, method="GET", status_class="1xx") == 1


def test_generation_and_stage_are_in_seconds() -> None:
    metrics = Metrics()

    metrics.generation(1500.0, "success")
    metrics.generation(300.0, "no_key_available")
    metrics.stage("write", 250.0)

    generation = "microtopic_generation_duration_seconds"
    assert value(metrics, f"{generation}_sum", outcome="success") == pytest.approx(1.5)
    assert value(metrics, f"{generation}_count", outcome="no_key_available") == 1
    stage = "microtopic_pipeline_stage_duration_seconds"
    assert value(metrics, f"{stage}_sum", stage="write") == pytest.approx(0.25)


def test_registries_are_separate() -> None:
    first, second = Metrics(), Metrics()

    first.error("not_found")

    assert value(first, "microtopic_errors_total", code="not_found") == 1
    assert value(second, "microtopic_errors_total", code="not_found") == 0


async def test_pool_gauges_follow_key_state(azure_simulator: SimulatorHarness) -> None:
    gateway = azure_simulator.gateway()
    metrics = Metrics()
    metrics.watch(gateway)

    gateway.pool.disable("west", "revoked for the test")

    state = "microtopic_key_state"
    assert value(metrics, state, key="west", state="disabled") == 1
    assert value(metrics, state, key="east", state="active") == 1
    assert value(metrics, state) == len(KEY_NAMES)
    assert value(metrics, "microtopic_key_circuit_state", key="west", state="closed") == 1
    assert value(metrics, "microtopic_gateway_max_concurrent_calls") == 10


async def test_counters_survive_a_new_pool(azure_simulator: SimulatorHarness) -> None:
    metrics = Metrics()
    first = azure_simulator.gateway()
    first.subscribe(metrics)
    await first.complete(PLAN_REQUEST, CallContext(step="plan"))

    second = azure_simulator.gateway()
    second.subscribe(metrics)
    await second.complete(PLAN_REQUEST, CallContext(step="plan"))

    calls = "microtopic_llm_call_duration_seconds_count"
    assert value(metrics, calls, outcome="success") == 2
    assert value(metrics, "microtopic_llm_tokens_total", type="prompt") > 0
