"""Starting and stopping `SimulatorServer` on a background thread."""

from __future__ import annotations

import socket

import httpx
import pytest

from microtopic.simulator import SimulatedKey, SimulatorConfig, SimulatorServer, SimulatorStartError

CONFIG = SimulatorConfig(keys=[SimulatedKey(name="east", secret="sim-east-secret")])


def test_server_listens_on_a_free_port() -> None:
    with SimulatorServer(CONFIG) as simulator:
        response = httpx.get(f"{simulator.base_url}/_simulator/stats")

    assert response.status_code == 200
    assert simulator.base_url == f"http://127.0.0.1:{simulator.port}"
    assert simulator.openai_base_url == f"{simulator.base_url}/v1"
    assert simulator.azure_endpoint == simulator.base_url


def test_server_stops_on_exit() -> None:
    with SimulatorServer(CONFIG) as simulator:
        port = simulator.port

    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/_simulator/stats")


def test_port_before_start_raises() -> None:
    simulator = SimulatorServer(CONFIG)

    with pytest.raises(RuntimeError, match="has not started"):
        _ = simulator.port


def test_taken_port_raises_start_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]

        with pytest.raises(SimulatorStartError, match="Check that the port is free"):
            SimulatorServer(CONFIG, port=port).start()
