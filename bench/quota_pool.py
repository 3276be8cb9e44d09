"""Goodput, failures and 429s of the quota-aware pool, against a naive round-robin pool.

Each case runs against `microtopic simulate` in its own process, with per-key
request quotas enforced the way Azure does and a time scale, so a minute of
quota passes in 60 / scale seconds:

    (a) 4 keys with equal quotas
    (b) 4 keys with quotas 1:2:4:8, the same total
    (c) as (a), plus a fifth key whose secret is revoked and 2% of calls failing with 500

Load comes in two shapes: exactly the total quota for `--minutes` simulated
minutes, and twice the total quota for 30 simulated seconds after a minute at
the quota that fills the windows. Every request has a deadline of 120 simulated
seconds. Goodput is the completed requests per simulated minute over the whole
run (first send to last answer), as a share of the most the keys admit. A short
run loses a little to its start and end, so "steady" also gives the rate of
responses in the middle three fifths of the run, as the same share. The naive
pool works as the first gateway did: round-robin, no quota bookkeeping, 2
retries 2 s apart.

The last table is the latency the gateway adds to each call, measured inside the
process (gateway time minus the provider call's own time) with no quotas and no
simulated delay, at 1 and 64 concurrent calls, next to a direct SDK call. It is
measured twice: with the metrics off (no observers but the one that times the
provider call, no trace) and on (the performance stats and Prometheus metrics
subscribed, and each call inside a request's trace, as the service runs them).
The two take turns in rounds of a tenth of the calls.

    .venv/bin/python -m bench.quota_pool              # about 6 minutes
    .venv/bin/python -m bench.quota_pool --quick      # case (a) only
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import math
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import openai

from bench.simulated import (
    API_VERSION,
    DEPLOYMENT,
    percentile,
    simulator_process,
    simulator_stats,
)
from microtopic.config import (
    GatewayConfig,
    KeyConfig,
    ProviderKind,
    QuotaConfig,
    RetryConfig,
    RetryStrategy,
    Settings,
)
from microtopic.domain import PlannedMicrotopic
from microtopic.errors import MicrotopicError
from microtopic.gateway import CallContext, CallEvent, Gateway
from microtopic.observability import (
    CallStatsRecorder,
    DeferredObserver,
    Metrics,
    PerformanceStats,
)
from microtopic.observability.tracing import Trace, current_trace
from microtopic.providers.base import ChatMessage, ChatRequest
from microtopic.providers.factory import build_pool

SCHEMA = PlannedMicrotopic.model_json_schema()
MESSAGES = (ChatMessage("user", "Plan <topic>Linear equations</topic>."),)
REQUEST = ChatRequest(MESSAGES, "PlannedMicrotopic", SCHEMA, max_tokens=300)
RPM_WINDOW_S = 10.0
DEADLINE_SIM_S = 120.0
BURST_SIM_S = 30.0
# Before a burst, a minute at exactly the quota fills every window, so the burst
# cannot borrow from windows that start empty.
WARMUP_SIM_S = 60.0
# The delay between our clock and the simulator's admission varies by up to about
# 25 ms on loopback here (measured). 15 ms gave the best goodput with 429s under
# 0.5% (5 ms: 1.1% 429s; 30 ms: 0.1% 429s but 1.5% of each 2 s window lost).
MARGIN_S = 0.015


@dataclass(frozen=True)
class Case:
    label: str
    rpms: tuple[int, ...]
    revoked_key: bool = False
    server_error_rate: float = 0.0

    def admitted_per_minute(self) -> float:
        """The most requests per minute the working keys admit, as the simulator counts."""
        per_window = sum(max(1, math.floor(rpm * RPM_WINDOW_S / 60)) for rpm in self.rpms)
        return per_window * 60 / RPM_WINDOW_S


CASES = (
    Case("(a) 4 equal keys", (90, 90, 90, 90)),
    Case("(b) quotas 1:2:4:8", (24, 48, 96, 192)),
    Case("(c) (a) + revoked + 2% 500", (90, 90, 90, 90), revoked_key=True, server_error_rate=0.02),
)


@dataclass
class Outcome:
    started: float
    ended: float
    ok: bool
    error: str | None = None


@dataclass(frozen=True)
class Load:
    """Calls per second for a duration, after a warm-up that is not measured."""

    rate_per_s: float
    duration_s: float
    warmup_rate_per_s: float
    warmup_s: float


@dataclass
class Run:
    outcomes: list[Outcome] = field(default_factory=list)

    def summary(self, case: Case, scale: float) -> dict[str, float]:
        done = [o for o in self.outcomes if o.ok]
        first = min(o.started for o in self.outcomes)
        last = max(o.ended for o in self.outcomes)
        minutes = (last - first) * scale / 60
        latencies = sorted(o.ended - o.started for o in done)
        return {
            "done": len(done),
            "failed": len(self.outcomes) - len(done),
            "goodput": len(done) / minutes / case.admitted_per_minute(),
            "steady": _middle_rate(done, first, last) * 60 / scale / case.admitted_per_minute(),
            "p50": percentile(latencies, 50),
            "p99": percentile(latencies, 99),
        }


def _middle_rate(done: list[Outcome], first: float, last: float) -> float:
    """Return responses per real second in the middle three fifths of the run."""
    start, end = first + 0.2 * (last - first), first + 0.8 * (last - first)
    answered = sum(start <= outcome.ended < end for outcome in done)
    return answered / (end - start)


class NaivePool:
    """A pool as the first gateway worked: round-robin, fixed sleeps between retries, no quotas."""

    def __init__(self, clients: list[openai.AsyncAzureOpenAI], *, max_concurrent: int) -> None:
        self._clients = clients
        self._active = [True] * len(clients)
        self._cursor = 0
        self._slots = asyncio.Semaphore(max_concurrent)

    async def complete(self, retries: int = 2, delay_s: float = 2.0) -> None:
        async with self._slots:
            for attempt in range(retries + 1):
                index = self._next()
                try:
                    await self._clients[index].chat.completions.create(**_body(), timeout=30)
                    return
                except openai.AuthenticationError:
                    self._active[index] = False
                    if attempt == retries:
                        raise
                except (openai.APIStatusError, openai.APIConnectionError):
                    if attempt == retries:
                        raise
                await asyncio.sleep(delay_s)

    def _next(self) -> int:
        for _ in range(len(self._clients)):
            index = self._cursor % len(self._clients)
            self._cursor += 1
            if self._active[index]:
                return index
        raise RuntimeError("no active key")

    async def aclose(self) -> None:
        for client in self._clients:
            await client.close()


def _body() -> dict[str, Any]:
    return {
        "model": DEPLOYMENT,
        "messages": [{"role": m.role, "content": m.content} for m in MESSAGES],
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "PlannedMicrotopic", "schema": SCHEMA, "strict": False},
        },
        "max_tokens": REQUEST.max_tokens,
    }


def simulator_config(case: Case, secrets: list[str], scale: float) -> dict[str, Any]:
    keys = [
        {"name": f"key-{index}", "secret": secret, "requests_per_minute": rpm}
        for index, (secret, rpm) in enumerate(zip(secrets, case.rpms, strict=True))
    ]
    config: dict[str, Any] = {
        "seed": 7,
        "time_scale": scale,
        "latency_s": 0.03,
        "latency_per_output_token_s": 0.0002,
        "latency_jitter": 0.2,
        "keys": keys,
    }
    if case.server_error_rate:
        config["fault_rates"] = {"server_error": case.server_error_rate}
    return config


def pool_keys(case: Case, base_url: str, secrets: list[str]) -> list[KeyConfig]:
    keys = [
        KeyConfig(
            name=f"key-{index}",
            provider=ProviderKind.AZURE,
            endpoint=base_url,
            deployment=DEPLOYMENT,
            api_version=API_VERSION,
            secret=secret,
            requests_per_minute=rpm,
        )
        for index, (secret, rpm) in enumerate(zip(secrets, case.rpms, strict=True))
    ]
    if case.revoked_key:
        revoked = {**keys[0].model_dump(), "name": "revoked", "secret": "sim-revoked-0000"}
        keys.append(KeyConfig.model_validate(revoked))
    return keys


async def offer(
    call: Callable[[], Awaitable[None]],
    rate_per_s: float,
    duration_s: float,
    *,
    warmup_rate_per_s: float = 0.0,
    warmup_s: float = 0.0,
) -> Run:
    """Start calls evenly spaced at `rate_per_s` for `duration_s`, and wait for all.

    A warm-up at `warmup_rate_per_s` for `warmup_s` comes first; its calls are
    not counted in the run.
    """
    run = Run()
    loop = asyncio.get_running_loop()

    async def one(measured: bool) -> None:
        started = time.monotonic()
        try:
            await call()
        except (MicrotopicError, openai.OpenAIError) as exc:
            error = getattr(exc, "code", type(exc).__name__)
            if measured:
                run.outcomes.append(Outcome(started, time.monotonic(), False, str(error)))
            return
        if measured:
            run.outcomes.append(Outcome(started, time.monotonic(), True))

    tasks = []
    phases = [(warmup_rate_per_s, warmup_s, False), (rate_per_s, duration_s, True)]
    for phase_rate, phase_s, measured in phases:
        count = round(phase_rate * phase_s)
        start = loop.time()
        for index in range(count):
            delay = start + index / phase_rate - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(measured)))
    await asyncio.gather(*tasks)
    return run


async def run_case(case: Case, pool: str, load: float, duration_sim_s: float, scale: float) -> str:
    secrets = [f"bench-{uuid.uuid4().hex}" for _ in case.rpms]
    quota_per_s = case.admitted_per_minute() / 60 * scale
    load_shape = Load(
        rate_per_s=load * quota_per_s,
        duration_s=duration_sim_s / scale,
        warmup_rate_per_s=quota_per_s,
        warmup_s=WARMUP_SIM_S / scale if load > 1 else 0.0,
    )
    with simulator_process(simulator_config(case, secrets, scale)) as base_url:
        if pool == "quota-aware":
            run = await _run_gateway(case, base_url, secrets, scale, load_shape)
        else:
            run = await _run_naive(case, base_url, secrets, load_shape)
        stats = simulator_stats(base_url)
    total = stats["total"]
    share_429 = total["status_counts"].get("429", 0) / max(1, total["calls"])
    s = run.summary(case, scale)
    errors = sorted({o.error for o in run.outcomes if o.error})
    return (
        f"{case.label:<28} {load:>3.0f}x {pool:<11} {s['done']:>6.0f} {s['failed']:>6.0f} "
        f"{s['goodput']:>8.1%} {s['steady']:>7.1%} {share_429:>7.2%} {s['p50']:>7.2f} "
        f"{s['p99']:>7.2f}  "
        f"{', '.join(errors)}"
    )


async def _run_gateway(
    case: Case,
    base_url: str,
    secrets: list[str],
    scale: float,
    load: Load,
) -> Run:
    config = GatewayConfig(
        max_concurrent_requests=64,
        max_queue_size=100_000,
        request_deadline_s=DEADLINE_SIM_S / scale,
        quota=QuotaConfig(time_scale=scale, margin_s=MARGIN_S),
        retry=RetryConfig(first_request=RetryStrategy(retries=2, delay_s=2.0)),
        health_check_interval_s=0,
    )
    keys = pool_keys(case, base_url, secrets)
    gateway = Gateway(build_pool(Settings(keys=keys), config), config)

    async def call() -> None:
        await gateway.complete(REQUEST, CallContext(step="bench"))

    try:
        return await offer(call, **vars(load))
    finally:
        await gateway.aclose()


async def _run_naive(case: Case, base_url: str, secrets: list[str], load: Load) -> Run:
    clients = [
        openai.AsyncAzureOpenAI(
            azure_endpoint=base_url, api_key=secret, api_version=API_VERSION, max_retries=0
        )
        for secret in [*secrets, *(["sim-revoked-0000"] if case.revoked_key else [])]
    ]
    naive = NaivePool(clients, max_concurrent=64)
    try:
        return await offer(naive.complete, **vars(load))
    finally:
        await naive.aclose()


class _ProviderTime:
    """Keeps each call's provider latency by request id, to subtract it from the total."""

    def __init__(self) -> None:
        self.by_request: dict[str, float] = {}

    def on_call_completed(self, event: CallEvent) -> None:
        self.by_request[event.context.request_id or ""] = event.latency_ms

    def on_call_failed(self, event: CallEvent) -> None:
        return None


async def measure_overhead(calls: int) -> list[str]:
    secrets = [f"bench-{uuid.uuid4().hex}" for _ in range(4)]
    config = {"seed": 7, "keys": [{"name": f"key-{i}", "secret": s} for i, s in enumerate(secrets)]}
    with simulator_process(config) as base_url:
        gateway_config = GatewayConfig(max_concurrent_requests=128, health_check_interval_s=0)
        keys = pool_keys(Case("overhead", (10**6,) * 4), base_url, secrets)
        provider_time = _ProviderTime()
        gateways = {}
        for metrics_on in (False, True):
            gateway = Gateway(build_pool(Settings(keys=keys), gateway_config), gateway_config)
            gateway.subscribe(provider_time)
            if metrics_on:
                _subscribe_metrics(gateway)
            gateways[metrics_on] = gateway
        direct = openai.AsyncAzureOpenAI(
            azure_endpoint=base_url, api_key=secrets[0], api_version=API_VERSION, max_retries=0
        )
        try:
            return await _overhead_rows(gateways, provider_time, direct, calls)
        finally:
            await direct.close()
            for gateway in gateways.values():
                await gateway.aclose()


def _subscribe_metrics(gateway: Gateway) -> None:
    """Subscribe the observers that record metrics, as `Runtime.start` does."""
    metrics = Metrics()
    gateway.subscribe(DeferredObserver([CallStatsRecorder(PerformanceStats()), metrics]))
    metrics.watch(gateway)


# The metrics-off and metrics-on runs take turns in this many rounds, the first of the
# pair swapping each round, so drift on a shared machine weighs on both alike.
OVERHEAD_ROUNDS = 10

TimedCall = Callable[[], Awaitable[float]]


async def _overhead_rows(
    gateways: dict[bool, Gateway],
    provider_time: _ProviderTime,
    direct: openai.AsyncAzureOpenAI,
    calls: int,
) -> list[str]:
    async def direct_call() -> float:
        started = time.perf_counter()
        await direct.chat.completions.create(**_body())
        return (time.perf_counter() - started) * 1000

    def gateway_call(gateway: Gateway, *, traced: bool) -> TimedCall:
        async def call() -> float:
            request_id = uuid.uuid4().hex
            # The service starts a request's trace before its first call, so creating
            # the trace is not timed, but the spans the gateway records in it are.
            token = current_trace.set(Trace()) if traced else None
            try:
                started = time.perf_counter()
                await gateway.complete(REQUEST, CallContext(request_id=request_id, step="bench"))
                total_ms = (time.perf_counter() - started) * 1000
            finally:
                if token is not None:
                    current_trace.reset(token)
            return total_ms - provider_time.by_request.pop(request_id)

        return call

    off = gateway_call(gateways[False], traced=False)
    on = gateway_call(gateways[True], traced=True)
    await _timed(direct_call, 8, calls)  # warm up connections
    await _interleaved(off, on, 8, calls)
    rows = []
    for concurrency in (1, 64):
        direct_ms = sorted(await _timed(direct_call, concurrency, calls))
        off_ms, on_ms = await _interleaved(off, on, concurrency, calls)
        figures = [
            percentile(values, rank) for values in (direct_ms, off_ms, on_ms) for rank in (50, 99)
        ]
        change = figures[4] / figures[2] - 1
        rows.append(
            f"{concurrency:>11} {figures[0]:>10.2f} {figures[1]:>10.2f}"
            + "".join(f" {value:>10.3f}" for value in figures[2:])
            + f" {change:>+10.1%}"
        )
    return rows


async def _timed(call: TimedCall, concurrency: int, count: int) -> list[float]:
    limit = asyncio.Semaphore(concurrency)

    async def one() -> float:
        async with limit:
            return await call()

    return list(await asyncio.gather(*(one() for _ in range(count))))


async def _interleaved(
    first: TimedCall, second: TimedCall, concurrency: int, calls: int
) -> tuple[list[float], list[float]]:
    """Return the sorted timings of `calls` calls of each, run in alternating rounds."""
    timings: tuple[list[float], list[float]] = ([], [])
    per_round = max(1, calls // OVERHEAD_ROUNDS)
    for round_index in range(OVERHEAD_ROUNDS):
        order = [(0, first), (1, second)]
        if round_index % 2:
            order.reverse()
        for index, call in order:
            timings[index].extend(await _timed(call, concurrency, per_round))
    return sorted(timings[0]), sorted(timings[1])


async def main_async(args: argparse.Namespace) -> None:
    print(f"time scale {args.time_scale}: a simulated minute is {60 / args.time_scale:.1f} s")
    print(
        f"{'case':<28} {'load':>4} {'pool':<11} {'done':>6} {'failed':>6} {'goodput':>8} "
        f"{'steady':>7} {'429s':>7} {'p50 s':>7} {'p99 s':>7}  errors"
    )
    cases = CASES[:1] if args.quick else CASES
    for case in cases:
        for load, duration_sim_s in ((1.0, args.minutes * 60), (2.0, BURST_SIM_S)):
            for pool in ("quota-aware", "naive"):
                print(await run_case(case, pool, load, duration_sim_s, args.time_scale), flush=True)
    print()
    print("latency the gateway adds per call (ms), no quotas, no simulated delay,")
    print("with the metrics and tracing off and on; the last column is the change of the")
    print("added p50")
    columns = ("direct p50", "direct p99", "off p50", "off p99", "on p50", "on p99", "p50 change")
    print(f"{'concurrency':>11} " + " ".join(f"{name:>10}" for name in columns))
    for row in await measure_overhead(args.calls):
        print(row)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--time-scale", type=float, default=5.0)
    parser.add_argument("--minutes", type=float, default=2.0, help="simulated minutes at 1x")
    parser.add_argument("--calls", type=int, default=1000, help="calls per overhead measurement")
    parser.add_argument("--quick", action="store_true", help="case (a) only")
    logging.basicConfig(level=logging.ERROR)
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
