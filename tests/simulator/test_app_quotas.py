"""Per-key request and token quotas, enforced over HTTP against the openai SDK.

Most tests move the simulator's clock by hand, so windows pass without waiting and
every number is exact. With time scale 10, an rpm window of 10 simulated seconds is
1 real second and a tpm window of 60 simulated seconds is 6 real seconds. The last
tests run on the real clock with a time scale, and bound what real time can vary.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletion
from openai.types.shared_params import ResponseFormatJSONSchema

from microtopic.domain import TopicPlan
from microtopic.simulator import SimulatedKey, SimulatorConfig, SimulatorServer
from microtopic.tokens import admission_tokens
from tests.simulator.constants import API_VERSION
from tests.simulator.support import USER_PROMPT, ManualClock, key_stats, set_fault

SECRET = "sim-quota-secret"
DEPLOYMENT = "gpt-4o-mini"
PLAN_FORMAT: ResponseFormatJSONSchema = {
    "type": "json_schema",
    "json_schema": {"name": "TopicPlan", "schema": TopicPlan.model_json_schema()},
}


@dataclass
class Running:
    """A running simulator with one key `east`, its SDK client and a control API client."""

    server: SimulatorServer
    client: openai.AsyncAzureOpenAI
    control: httpx.AsyncClient

    async def call(self, **fields: Any) -> ChatCompletion:
        completion: ChatCompletion = await self.client.chat.completions.create(
            model=DEPLOYMENT, messages=USER_PROMPT, **fields
        )
        return completion

    async def call_raw(self, **fields: Any) -> httpx.Headers:
        """Make a successful call and return its response headers."""
        response = await self.client.chat.completions.with_raw_response.create(
            model=DEPLOYMENT, messages=USER_PROMPT, **fields
        )
        return httpx.Headers(dict(response.headers))

    async def rejected(self, **fields: Any) -> openai.RateLimitError:
        """Make a call that must be rejected with 429 and return the SDK's error."""
        with pytest.raises(openai.RateLimitError) as caught:
            await self.call(**fields)
        return caught.value


@asynccontextmanager
async def running(
    config: SimulatorConfig, clock: ManualClock | None = None
) -> AsyncIterator[Running]:
    with SimulatorServer(config, monotonic=clock or time.monotonic) as server:
        async with (
            openai.AsyncAzureOpenAI(
                azure_endpoint=server.azure_endpoint,
                api_key=SECRET,
                api_version=API_VERSION,
                max_retries=0,
            ) as client,
            httpx.AsyncClient(base_url=server.base_url) as control,
        ):
            yield Running(server, client, control)


def quota_config(**key_fields: Any) -> SimulatorConfig:
    key = SimulatedKey.model_validate(
        {"name": "east", "secret": SECRET, "deployments": [DEPLOYMENT], **key_fields}
    )
    return SimulatorConfig(keys=[key], time_scale=10, seed=7)


async def test_eleventh_call_in_window_is_rejected() -> None:
    clock = ManualClock()

    async with running(quota_config(requests_per_minute=60), clock) as sim:
        remaining = [(await sim.call_raw())["x-ratelimit-remaining-requests"] for _ in range(10)]
        error = await sim.rejected()

    headers = error.response.headers
    assert remaining == [str(left) for left in range(9, -1, -1)]
    assert error.code == "429"
    assert headers["retry-after-ms"] == "1000"
    assert headers["x-ms-retry-after-ms"] == "1000"
    assert headers["retry-after"] == "1"
    assert headers["x-ratelimit-limit-requests"] == "10"
    assert headers["x-ratelimit-remaining-requests"] == "0"
    assert "request rate limit (10 requests per 10 s)" in error.message
    assert "Please retry after 1 seconds" in error.message


async def test_retry_after_counts_from_oldest_call() -> None:
    clock = ManualClock()

    async with running(quota_config(requests_per_minute=60), clock) as sim:
        for _ in range(5):
            await sim.call()
        clock.advance(0.25)
        for _ in range(5):
            await sim.call()
        first = await sim.rejected()
        clock.advance(0.75)
        for _ in range(5):
            await sim.call()
        second = await sim.rejected()

    # The first five leave at 10 simulated s (1 real s), the next five at 12.5.
    assert first.response.headers["retry-after-ms"] == "750"
    assert second.response.headers["retry-after-ms"] == "250"


async def test_calls_after_window_are_admitted() -> None:
    clock = ManualClock()

    async with running(quota_config(requests_per_minute=60), clock) as sim:
        for _ in range(10):
            await sim.call()
        error = await sim.rejected()
        clock.advance(int(error.response.headers["retry-after-ms"]) / 1000)
        headers = await sim.call_raw()
        stats = await key_stats(sim.control, "east")

    assert headers["x-ratelimit-remaining-requests"] == "9"
    assert stats["requests"]["admitted"] == 11
    assert stats["requests"]["peak"] == 10
    assert stats["rate_limited"] == {"quota": 1, "injected": 0}


async def test_token_quota_charges_admission_tokens() -> None:
    clock = ManualClock()
    charge = admission_tokens(USER_PROMPT, None, 1000)
    admitted = 6000 // charge

    async with running(quota_config(tokens_per_minute=6000), clock) as sim:
        remaining = [
            (await sim.call_raw(max_tokens=1000))["x-ratelimit-remaining-tokens"]
            for _ in range(admitted)
        ]
        error = await sim.rejected(max_tokens=1000)
        stats = await key_stats(sim.control, "east")

    headers = error.response.headers
    assert remaining == [str(6000 - charge * count) for count in range(1, admitted + 1)]
    assert headers["x-ratelimit-limit-tokens"] == "6000"
    assert headers["x-ratelimit-remaining-tokens"] == str(6000 - charge * admitted)
    assert headers["retry-after-ms"] == "6000"
    assert "x-ratelimit-limit-requests" not in headers
    assert "token rate limit (6000 tokens per 60 s)" in error.message
    assert stats["tokens"]["admitted"] == charge * admitted
    assert stats["tokens"]["peak"] == charge * admitted
    assert stats["tokens"]["limit"] == 6000


async def test_charge_counts_schema_and_default() -> None:
    key = SimulatedKey(name="east", secret=SECRET, tokens_per_minute=100_000)
    config = SimulatorConfig(keys=[key], default_max_tokens=500)

    async with running(config) as sim:
        completion = await sim.call(response_format=PLAN_FORMAT)
        stats = await key_stats(sim.control, "east")

    assert completion.usage is not None
    assert stats["tokens"]["admitted"] == admission_tokens(USER_PROMPT, PLAN_FORMAT, 500)
    assert stats["tokens"]["admitted"] == completion.usage.prompt_tokens + 500


async def test_max_completion_tokens_is_charged() -> None:
    async with running(quota_config(tokens_per_minute=100_000)) as sim:
        await sim.call(max_tokens=900, max_completion_tokens=300)
        stats = await key_stats(sim.control, "east")

    assert stats["tokens"]["admitted"] == admission_tokens(USER_PROMPT, None, 300)


async def test_charge_over_limit_never_fits() -> None:
    async with running(quota_config(tokens_per_minute=1000)) as sim:
        error = await sim.rejected(max_tokens=2000)
        stats = await key_stats(sim.control, "east")

    charge = admission_tokens(USER_PROMPT, None, 2000)
    assert f"charged {charge} tokens" in error.message
    assert "can never be admitted" in error.message
    assert "retry-after" not in error.response.headers
    assert "retry-after-ms" not in error.response.headers
    assert error.response.headers["x-ratelimit-remaining-tokens"] == "1000"
    assert stats["tokens"]["admitted"] == 0
    assert stats["rate_limited"] == {"quota": 1, "injected": 0}


async def test_rejected_calls_consume_nothing() -> None:
    clock = ManualClock()
    unfillable: ResponseFormatJSONSchema = {
        "type": "json_schema",
        "json_schema": {"name": "year", "schema": {"type": "string", "pattern": "^[0-9]{4}$"}},
    }

    async with running(quota_config(requests_per_minute=60), clock) as sim:
        with pytest.raises(openai.NotFoundError):
            await sim.client.chat.completions.create(model="other", messages=USER_PROMPT)
        with pytest.raises(openai.BadRequestError):
            await sim.call(response_format=unfillable)
        await set_fault(sim.control, "east", kind="server_error", count=1)
        with pytest.raises(openai.InternalServerError):
            await sim.call()
        for _ in range(10):
            await sim.call()
        await sim.rejected()
        stats = await key_stats(sim.control, "east")

    assert stats["requests"]["admitted"] == 10
    assert stats["status_counts"] == {"200": 10, "400": 1, "404": 1, "429": 1, "500": 1}
    assert stats["rate_limited"] == {"quota": 1, "injected": 0}


async def test_concurrent_burst_admits_exactly_limit() -> None:
    clock = ManualClock()

    async with running(quota_config(requests_per_minute=60), clock) as sim:
        first = await _burst(sim, 30)
        clock.advance(1.0)
        second = await _burst(sim, 30)
        stats = await key_stats(sim.control, "east")

    assert first == {200: 10, 429: 20}
    assert second == {200: 10, 429: 20}
    assert stats["requests"]["admitted"] == 20
    assert stats["requests"]["peak"] == 10
    assert stats["rate_limited"] == {"quota": 40, "injected": 0}


async def test_openai_route_quota_error_shape() -> None:
    config = quota_config(requests_per_minute=6)

    async with running(config) as sim:
        client = openai.AsyncOpenAI(
            base_url=sim.server.openai_base_url, api_key=SECRET, max_retries=0
        )
        async with client:
            await client.chat.completions.create(model=DEPLOYMENT, messages=USER_PROMPT)
            with pytest.raises(openai.RateLimitError) as caught:
                await client.chat.completions.create(model=DEPLOYMENT, messages=USER_PROMPT)

    error = caught.value.response.json()["error"]
    assert caught.value.code == "rate_limit_exceeded"
    assert error["type"] == "requests"
    assert caught.value.response.headers["x-ratelimit-limit-requests"] == "1"


async def test_unlimited_key_sends_no_headers() -> None:
    async with running(quota_config()) as sim:
        headers = await sim.call_raw()
        stats = await key_stats(sim.control, "east")

    assert not [name for name in headers if name.startswith("x-ratelimit-")]
    assert stats["requests"]["limit"] is None
    assert stats["requests"]["admitted"] == 1
    assert stats["tokens"]["admitted"] == admission_tokens(USER_PROMPT, None, 4096)


async def test_reset_clears_quota_windows() -> None:
    clock = ManualClock()

    async with running(quota_config(requests_per_minute=6), clock) as sim:
        await sim.call()
        await sim.rejected()
        await sim.control.post("/_simulator/reset")
        headers = await sim.call_raw()

    assert headers["x-ratelimit-remaining-requests"] == "0"


async def test_window_passes_in_scaled_real_time() -> None:
    # Time scale 4: the 10 s rpm window lasts 2.5 real seconds.
    key = SimulatedKey(name="east", secret=SECRET, requests_per_minute=60)
    config = SimulatorConfig(keys=[key], time_scale=4)

    async with running(config) as sim:
        started_s = time.monotonic()
        for _ in range(10):
            await sim.call()
        error = await sim.rejected()
        elapsed_ms = (time.monotonic() - started_s) * 1000
        retry_after_ms = int(error.response.headers["retry-after-ms"])
        await asyncio.sleep(retry_after_ms / 1000)
        completion = await sim.call()

    # The first call was admitted after `started_s` and the 11th checked before the
    # error arrived, so the wait lies between these bounds whatever the machine's load.
    assert 2500 - elapsed_ms - 1 <= retry_after_ms <= 2500
    assert completion.choices[0].finish_reason == "stop"


async def test_load_never_exceeds_quota_peaks() -> None:
    # With time scale 10 and 10 s windows, each window lasts 1 real second. So 2.5 s of
    # load crosses at least two, and limits this small are reached on a slow machine too.
    keys = [
        SimulatedKey(name="east", secret=SECRET, requests_per_minute=60),
        SimulatedKey(name="west", secret="sim-west", tokens_per_minute=6000),
    ]
    config = SimulatorConfig(keys=keys, time_scale=10, rpm_window_s=10, tpm_window_s=10)
    charge = admission_tokens(USER_PROMPT, None, 200)

    async with running(config) as sim:
        west = openai.AsyncAzureOpenAI(
            azure_endpoint=sim.server.azure_endpoint,
            api_key="sim-west",
            api_version=API_VERSION,
            max_retries=0,
        )
        async with west:
            deadline_s = time.monotonic() + 2.5
            workers = [_call_until(sim.client, deadline_s) for _ in range(6)]
            workers += [_call_until(west, deadline_s) for _ in range(6)]
            successes = await asyncio.gather(*workers)
        east_stats = await key_stats(sim.control, "east")
        west_stats = await key_stats(sim.control, "west")

    assert east_stats["requests"]["limit"] == 10
    assert east_stats["requests"]["peak"] == 10
    assert east_stats["requests"]["admitted"] == sum(successes[:6])
    assert east_stats["requests"]["admitted"] > 10
    assert east_stats["rate_limited"]["quota"] > 0
    assert west_stats["tokens"]["limit"] == 1000
    assert west_stats["tokens"]["peak"] == 1000 // charge * charge
    assert west_stats["tokens"]["admitted"] == sum(successes[6:]) * charge
    assert west_stats["tokens"]["admitted"] > 1000
    assert west_stats["rate_limited"]["quota"] > 0


async def _burst(sim: Running, calls: int) -> dict[int, int]:
    results = await asyncio.gather(*[sim.call() for _ in range(calls)], return_exceptions=True)
    counts = {200: 0, 429: 0}
    for result in results:
        if isinstance(result, openai.RateLimitError):
            counts[429] += 1
        elif isinstance(result, BaseException):
            raise result
        else:
            counts[200] += 1
    return counts


async def _call_until(client: openai.AsyncAzureOpenAI, deadline_s: float) -> int:
    """Call until `deadline_s` and return how many calls succeeded."""
    successes = 0
    while time.monotonic() < deadline_s:
        try:
            await client.chat.completions.create(
                model=DEPLOYMENT, messages=USER_PROMPT, max_tokens=200
            )
        except openai.RateLimitError:
            await asyncio.sleep(0.005)
        else:
            successes += 1
    return successes
