"""The latency model: a base delay plus a delay per completion token, with seeded jitter.

Each 200 reply reports the delay it waited in `x-simulator-latency-ms`, so the tests
check the drawn delays exactly and the real waits only from below.
"""

from __future__ import annotations

import time

import httpx
import openai
import pytest

from microtopic.simulator import SimulatedKey, SimulatorConfig, SimulatorServer
from tests.simulator.support import USER_PROMPT, set_fault


async def _delays_ms(config: SimulatorConfig, calls: int) -> list[tuple[float, float, int]]:
    """Return (reported delay in ms, measured wall time in ms, completion tokens) per call."""
    results = []
    with SimulatorServer(config) as simulator:
        async with openai.AsyncOpenAI(
            base_url=simulator.openai_base_url, api_key="s", max_retries=0
        ) as client:
            for _ in range(calls):
                started_s = time.monotonic()
                response = await client.chat.completions.with_raw_response.create(
                    model="m", messages=USER_PROMPT
                )
                elapsed_ms = (time.monotonic() - started_s) * 1000
                usage = response.parse().usage
                assert usage is not None
                delay_ms = float(response.headers["x-simulator-latency-ms"])
                results.append((delay_ms, elapsed_ms, usage.completion_tokens))
    return results


async def test_jitter_stays_within_bounds() -> None:
    config = SimulatorConfig(
        keys=[SimulatedKey(name="east", secret="s")], latency_s=0.2, latency_jitter=0.5, seed=3
    )

    results = await _delays_ms(config, calls=6)

    delays_ms = [delay_ms for delay_ms, _, _ in results]
    assert all(100 <= delay_ms <= 300 for delay_ms in delays_ms)
    assert len(set(delays_ms)) == 6
    # asyncio may run a timer up to its clock resolution early, hence 1 ms of slack.
    assert all(elapsed_ms >= delay_ms - 1 for delay_ms, elapsed_ms, _ in results)


async def test_seeded_jitter_repeats_across_runs() -> None:
    config = SimulatorConfig(
        keys=[SimulatedKey(name="east", secret="s")], latency_s=0.05, latency_jitter=0.5, seed=9
    )

    first = await _delays_ms(config, calls=4)
    second = await _delays_ms(config, calls=4)

    assert [delay for delay, _, _ in first] == [delay for delay, _, _ in second]


async def test_delay_grows_per_completion_token() -> None:
    config = SimulatorConfig(
        keys=[SimulatedKey(name="east", secret="s")],
        latency_s=0.01,
        latency_per_output_token_s=0.0005,
        seed=1,
    )

    results = await _delays_ms(config, calls=3)

    for delay_ms, elapsed_ms, completion_tokens in results:
        assert delay_ms == pytest.approx(10 + 0.5 * completion_tokens, abs=0.001)
        assert elapsed_ms >= delay_ms - 1


async def test_errors_are_not_delayed() -> None:
    config = SimulatorConfig(keys=[SimulatedKey(name="east", secret="s")], latency_s=5.0)

    with SimulatorServer(config) as simulator:
        async with httpx.AsyncClient(base_url=simulator.base_url) as http:
            await set_fault(http, "east", kind="server_error", count=1)
            response = await http.post(
                "/v1/chat/completions",
                headers={"authorization": "Bearer s"},
                json={"model": "m", "messages": USER_PROMPT},
            )

    assert response.status_code == 500
    # Generous for a loaded machine, and still far below the 5 s of a delayed reply.
    assert response.elapsed.total_seconds() < 2.5
    assert "x-simulator-latency-ms" not in response.headers
