"""Latency the gateway adds over a direct openai SDK call, on the local simulator.

Runs N calls at concurrency 1 and 64, once straight through `AsyncAzureOpenAI`
and once through `Gateway.complete` over a pool of 3 simulated keys, and prints
p50/p99 of each and the difference. The simulator answers with no added delay,
so the figures are client, gateway and loopback costs only.

    .venv/bin/python bench/gateway_overhead.py --calls 400
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable

import openai

from microtopic.config import GatewayConfig, KeyConfig, ProviderKind, Settings
from microtopic.domain import PlannedMicrotopic
from microtopic.gateway import CallContext, Gateway
from microtopic.observability.performance import percentile
from microtopic.providers.base import ChatMessage, ChatRequest
from microtopic.providers.factory import build_pool
from microtopic.simulator import SimulatedKey, SimulatorConfig, SimulatorServer

API_VERSION = "2024-10-21"
DEPLOYMENT = "bench-deployment"
SCHEMA = PlannedMicrotopic.model_json_schema()
MESSAGES = (ChatMessage("user", "Plan <topic>Linear equations</topic>."),)


async def timed_calls(
    call: Callable[[], Awaitable[object]], calls: int, concurrency: int
) -> list[float]:
    """Return the latency in ms of each of `calls` calls, `concurrency` at a time."""
    latencies: list[float] = []
    limit = asyncio.Semaphore(concurrency)

    async def one() -> None:
        async with limit:
            started = time.perf_counter()
            await call()
            latencies.append((time.perf_counter() - started) * 1000)

    await asyncio.gather(*(one() for _ in range(calls)))
    return latencies


async def measure(base_url: str, secrets: list[str], calls: int) -> None:
    direct = openai.AsyncAzureOpenAI(
        azure_endpoint=base_url, api_key=secrets[0], api_version=API_VERSION, max_retries=0
    )
    keys = [
        KeyConfig(
            name=f"bench-{index}",
            provider=ProviderKind.AZURE,
            endpoint=base_url,
            deployment=DEPLOYMENT,
            api_version=API_VERSION,
            secret=secret,
        )
        for index, secret in enumerate(secrets)
    ]
    gateway = Gateway(build_pool(Settings(keys=keys)), GatewayConfig(max_concurrent_requests=128))
    request = ChatRequest(MESSAGES, "PlannedMicrotopic", SCHEMA, max_tokens=200)

    async def direct_call() -> object:
        return await direct.chat.completions.create(
            model=DEPLOYMENT,
            messages=[{"role": "user", "content": MESSAGES[0].content}],
            response_format={
                "type": "json_schema",
                "json_schema": {"name": "PlannedMicrotopic", "schema": SCHEMA, "strict": False},
            },
            max_tokens=200,
        )

    async def gateway_call() -> object:
        return await gateway.complete(request, CallContext(step="bench"))

    try:
        await timed_calls(direct_call, 50, 8)  # warm up connections
        await timed_calls(gateway_call, 50, 8)
        print(f"{'concurrency':>11} {'path':>8} {'p50 ms':>8} {'p99 ms':>8}")
        for concurrency in (1, 64):
            results = {}
            for label, call in (("direct", direct_call), ("gateway", gateway_call)):
                ordered = sorted(await timed_calls(call, calls, concurrency))
                p50, p99 = percentile(ordered, 50), percentile(ordered, 99)
                results[label] = (p50, p99)
                print(f"{concurrency:>11} {label:>8} {p50:8.2f} {p99:8.2f}")
            added_p50 = results["gateway"][0] - results["direct"][0]
            added_p99 = results["gateway"][1] - results["direct"][1]
            print(f"{concurrency:>11} {'added':>8} {added_p50:8.2f} {added_p99:8.2f}")
    finally:
        await direct.close()
        await gateway.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=400, help="calls per measurement")
    args = parser.parse_args()
    secrets = [f"bench-{uuid.uuid4().hex}" for _ in range(3)]
    config = SimulatorConfig(
        keys=[SimulatedKey(name=f"bench-{i}", secret=s) for i, s in enumerate(secrets)]
    )
    with SimulatorServer(config) as sim:
        asyncio.run(measure(sim.base_url, secrets, args.calls))


if __name__ == "__main__":
    main()
