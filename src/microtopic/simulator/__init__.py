"""A local simulator of Azure OpenAI and OpenAI chat completions, for tests and benchmarks.

It speaks both services' wire formats, so the real openai SDK can call it over HTTP
without a network or a model. Replies are built from the request's JSON Schema, and a
control API injects faults (rate limits, server errors, revoked keys) per key at run time.

    config = SimulatorConfig(keys=[SimulatedKey(name="east", secret="sim-east")])
    with SimulatorServer(config) as sim:
        client = openai.AsyncAzureOpenAI(
            azure_endpoint=sim.azure_endpoint, api_key="sim-east", api_version="2024-10-21"
        )

Modules: `config` (keys and settings), `app` (routes), `control` (fault injection and
counters), `chat` (request bodies and replies), `content` and `text` (generated JSON
and lesson text), `responses` (wire formats), `state` (faults and counters), `server`
(uvicorn).
"""

from microtopic.simulator.app import create_simulator_app
from microtopic.simulator.config import SimulatedKey, SimulatorConfig, load_simulator_config
from microtopic.simulator.content import UnsupportedSchemaError, instance_from_schema
from microtopic.simulator.server import (
    SimulatorServer,
    SimulatorStartError,
    run_simulator,
    serve_simulator,
)
from microtopic.simulator.state import Fault, FaultKind

__all__ = [
    "Fault",
    "FaultKind",
    "SimulatedKey",
    "SimulatorConfig",
    "SimulatorServer",
    "SimulatorStartError",
    "UnsupportedSchemaError",
    "create_simulator_app",
    "instance_from_schema",
    "load_simulator_config",
    "run_simulator",
    "serve_simulator",
]
