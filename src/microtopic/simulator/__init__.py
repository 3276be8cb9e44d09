"""A local simulator of Azure OpenAI and OpenAI chat completions, for tests and benchmarks.

It speaks both services' wire formats, so the real openai SDK can call it over HTTP
without a network or a model. Replies are built from the request's JSON Schema. Each
key can have request and token quotas enforced as Azure enforces them, calls wait a
latency drawn per reply, and faults are injected per key through a control API or at
random rates. docs/simulator.md describes the config, the quota contract and the
wire shape of each fault.

    config = SimulatorConfig(
        keys=[SimulatedKey(name="east", secret="sim-east", requests_per_minute=60)],
        time_scale=10,
    )
    with SimulatorServer(config) as sim:
        client = openai.AsyncAzureOpenAI(
            azure_endpoint=sim.azure_endpoint, api_key="sim-east", api_version="2024-10-21"
        )

Modules: `config` (keys and settings), `app` (routes), `control` (the control API),
`chat` (request bodies and replies), `content` and `text` (generated JSON and lesson
text), `responses` (wire formats), `faults` (fault kinds and random draws), `quota`
(sliding windows), `interruptions` (hangs and dropped connections), `state` (faults,
quotas and counters), `server` (uvicorn).
"""

from microtopic.simulator.app import create_simulator_app
from microtopic.simulator.config import (
    SimulatedKey,
    SimulatorConfig,
    load_simulator_config,
    override_simulator_config,
)
from microtopic.simulator.content import UnsupportedSchemaError, instance_from_schema
from microtopic.simulator.faults import Fault, FaultKind, FilterCategory
from microtopic.simulator.quota import request_limit, token_limit
from microtopic.simulator.server import (
    SimulatorServer,
    SimulatorStartError,
    run_simulator,
    serve_simulator,
)

__all__ = [
    "Fault",
    "FaultKind",
    "FilterCategory",
    "SimulatedKey",
    "SimulatorConfig",
    "SimulatorServer",
    "SimulatorStartError",
    "UnsupportedSchemaError",
    "create_simulator_app",
    "instance_from_schema",
    "load_simulator_config",
    "override_simulator_config",
    "request_limit",
    "run_simulator",
    "serve_simulator",
    "token_limit",
]
