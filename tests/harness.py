"""The simulator of Azure OpenAI on 127.0.0.1, with three keys and gateways pointed at it.

Tests reach the simulator the way the service does: through `build_pool`, the real
`RemoteProvider` and the openai SDK over HTTP. Faults are injected and calls counted
through the simulator's control API.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx

from microtopic.config import (
    GatewayConfig,
    KeyConfig,
    ProviderKind,
    RetryConfig,
    RetryStrategy,
    Settings,
    StructuredOutput,
)
from microtopic.domain import TopicPlan
from microtopic.gateway import CallEvent, Gateway
from microtopic.providers.base import ChatMessage, ChatRequest
from microtopic.providers.factory import build_pool
from microtopic.simulator import SimulatedKey, SimulatorConfig, SimulatorServer

API_VERSION = "2024-10-21"
DEPLOYMENT = "gpt-4o-mini"
MODEL_NAME = "gpt-4o-mini-2024-07-18"
KEY_NAMES = ("east", "west", "north")

# The default counts of retries with delays short enough for tests.
FAST_RETRIES = RetryConfig(
    first_request=RetryStrategy(retries=2, delay_s=0.01),
    retry_request=RetryStrategy(retries=3, delay_s=0.01),
)
FAST_GATEWAY = GatewayConfig(retry=FAST_RETRIES)

# A planner call, the request most tests send through providers and gateways.
PLAN_REQUEST = ChatRequest(
    messages=(
        ChatMessage("system", "You are a curriculum planner. Reply with JSON only."),
        ChatMessage("user", "Plan the topic.\n<topic>Linear equations</topic>"),
    ),
    schema_name="TopicPlan",
    json_schema=TopicPlan.model_json_schema(),
    max_tokens=400,
)


class RecordingObserver:
    """Keeps every event a gateway reports."""

    def __init__(self) -> None:
        self.completed: list[CallEvent] = []
        self.failed: list[CallEvent] = []
        self.events: list[CallEvent] = []

    def on_call_completed(self, event: CallEvent) -> None:
        self.completed.append(event)
        self.events.append(event)

    def on_call_failed(self, event: CallEvent) -> None:
        self.failed.append(event)
        self.events.append(event)


def new_secret() -> str:
    """Return a made-up key secret that no other test uses."""
    return "sim-secret-" + uuid.uuid4().hex


class SimulatorHarness:
    """A running simulator, the secrets of its keys, and the gateways built against it."""

    def __init__(self, server: SimulatorServer, secrets: dict[str, str]) -> None:
        self.server = server
        self.secrets = secrets
        self._control_client = httpx.AsyncClient(base_url=server.base_url)
        self._gateways: list[Gateway] = []

    @classmethod
    @asynccontextmanager
    async def start(cls, *, latency_s: float = 0.0) -> AsyncIterator[SimulatorHarness]:
        """Run a simulator whose keys may call only `DEPLOYMENT`, until the block exits."""
        secrets = {name: new_secret() for name in KEY_NAMES}
        config = SimulatorConfig(
            keys=[
                SimulatedKey(name=name, secret=secret, deployments=[DEPLOYMENT])
                for name, secret in secrets.items()
            ],
            models={DEPLOYMENT: MODEL_NAME},
            latency_s=latency_s,
            seed=7,
        )
        with SimulatorServer(config) as server:
            harness = cls(server, secrets)
            try:
                yield harness
            finally:
                await harness.aclose()

    def azure_key(
        self,
        name: str,
        *,
        deployment: str = DEPLOYMENT,
        structured_output: StructuredOutput = StructuredOutput.JSON_SCHEMA,
    ) -> KeyConfig:
        """Return the config of an Azure key that sends the simulator's secret for `name`."""
        return KeyConfig(
            name=name,
            provider=ProviderKind.AZURE,
            endpoint=self.server.base_url,
            deployment=deployment,
            api_version=API_VERSION,
            secret=self.secrets[name],
            structured_output=structured_output,
        )

    def openai_key(self, name: str) -> KeyConfig:
        """Return the config of an OpenAI-compatible key on the simulator's `/v1` route."""
        return KeyConfig(
            name=name,
            provider=ProviderKind.OPENAI,
            endpoint=self.server.openai_base_url,
            model=DEPLOYMENT,
            secret=self.secrets[name],
        )

    def gateway(
        self, keys: list[KeyConfig] | None = None, config: GatewayConfig = FAST_GATEWAY
    ) -> Gateway:
        """Build a gateway over `keys`, by default an Azure key per simulator key."""
        if keys is None:
            keys = [self.azure_key(name) for name in KEY_NAMES]
        gateway = Gateway(build_pool(Settings(keys=keys), config), config)
        self._gateways.append(gateway)
        return gateway

    async def set_fault(self, key_name: str, kind: str, **fields: Any) -> None:
        """Make the next calls with `key_name` fail, all of them unless `count` is given."""
        response = await self._control_client.put(
            f"/_simulator/keys/{key_name}/fault", json={"kind": kind, **fields}
        )
        response.raise_for_status()

    async def stats(self) -> dict[str, Any]:
        """Return the simulator's whole stats document."""
        response = await self._control_client.get("/_simulator/stats")
        response.raise_for_status()
        stats: dict[str, Any] = response.json()
        return stats

    async def calls(self, key_name: str | None = None) -> int:
        """Return the chat calls the simulator received with `key_name`, or in total."""
        response = await self._control_client.get("/_simulator/stats")
        response.raise_for_status()
        stats = response.json()
        counts = stats["total"] if key_name is None else stats["keys"][key_name]
        return int(counts["calls"])

    async def aclose(self) -> None:
        """Close every gateway built here and the control client."""
        for gateway in self._gateways:
            await gateway.aclose()
        await self._control_client.aclose()
