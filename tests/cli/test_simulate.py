"""The `microtopic simulate` command: the config it builds, without serving it."""

from __future__ import annotations

from pathlib import Path

import pytest

from microtopic.simulator import SimulatorConfig
from tests.cli.support import Cli, one_line

SIMULATOR_YAML = """
time_scale: 5
keys:
  - name: east
    secret: sim-east-secret
    requests_per_minute: 60
    tokens_per_minute: 30000
"""


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> list[SimulatorConfig]:
    """The configs `simulate` would serve; no port is bound and no server started."""
    configs: list[SimulatorConfig] = []

    def record(config: SimulatorConfig, host: str, port: int, listener: None) -> None:
        configs.append(config)

    monkeypatch.setattr("microtopic.cli.main.listen_on", lambda host, port: None)
    monkeypatch.setattr("microtopic.cli.main.run_simulator", record)
    return configs


@pytest.fixture
def simulator_file(tmp_path: Path) -> Path:
    path = tmp_path / "simulator.yaml"
    path.write_text(SIMULATOR_YAML, encoding="utf-8")
    return path


def test_simulate_serves_config_file(
    cli: Cli, simulator_file: Path, served: list[SimulatorConfig]
) -> None:
    result = cli.run("simulate", "--config", str(simulator_file))

    assert result.exit_code == 0, result.stderr
    assert len(served) == 1
    assert served[0].time_scale == 5
    assert served[0].keys[0].requests_per_minute == 60
    assert "with keys: east (time scale 5)" in result.stderr


def test_time_scale_option_overrides_file(
    cli: Cli, simulator_file: Path, served: list[SimulatorConfig]
) -> None:
    result = cli.run("simulate", "--config", str(simulator_file), "--time-scale", "60")

    assert result.exit_code == 0, result.stderr
    assert served[0].time_scale == 60
    assert served[0].keys[0].tokens_per_minute == 30000


def test_keys_option_adds_keys(
    cli: Cli, simulator_file: Path, served: list[SimulatorConfig]
) -> None:
    result = cli.run("simulate", "-c", str(simulator_file), "--key", "west=sim-west-secret")

    assert result.exit_code == 0, result.stderr
    assert [key.name for key in served[0].keys] == ["east", "west"]


def test_keys_without_file_use_defaults(cli: Cli, served: list[SimulatorConfig]) -> None:
    result = cli.run("simulate", "--key", "east=s1", "--time-scale", "10")

    assert result.exit_code == 0, result.stderr
    assert served[0].time_scale == 10
    assert served[0].rpm_window_s == 10


def test_zero_time_scale_is_rejected(
    cli: Cli, simulator_file: Path, served: list[SimulatorConfig]
) -> None:
    result = cli.run("simulate", "--config", str(simulator_file), "--time-scale", "0")

    assert result.exit_code == 2
    assert "time_scale: Input should be greater than 0" in one_line(result.stderr)
    assert served == []


def test_repeated_key_name_is_rejected(
    cli: Cli, simulator_file: Path, served: list[SimulatorConfig]
) -> None:
    result = cli.run("simulate", "-c", str(simulator_file), "--key", "east=another-secret")

    assert result.exit_code == 2
    assert "repeated: east" in one_line(result.stderr)
    assert served == []


def test_simulate_without_keys_is_rejected(cli: Cli, served: list[SimulatorConfig]) -> None:
    result = cli.run("simulate")

    assert result.exit_code == 2
    assert "Give the simulator a key" in one_line(result.stderr)
    assert served == []
