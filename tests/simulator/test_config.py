"""Loading and validating the simulator config."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from microtopic.errors import ConfigError
from microtopic.simulator import SimulatedKey, SimulatorConfig, load_simulator_config

VALID_YAML = """
latency_s: 0.05
seed: 7
keys:
  - name: east
    secret: sim-east-secret
    deployments: [gpt-4o-mini]
  - name: west
    secret: sim-west-secret
models:
  gpt-4o-mini: gpt-4o-mini-2024-07-18
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "simulator.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_load_reads_every_field(tmp_path: Path) -> None:
    path = _write(tmp_path, VALID_YAML)

    config = load_simulator_config(path)

    assert [key.name for key in config.keys] == ["east", "west"]
    assert config.keys[0].secret.get_secret_value() == "sim-east-secret"
    assert config.keys[1].deployments is None
    assert config.latency_s == 0.05
    assert config.seed == 7
    assert config.model_name("gpt-4o-mini") == "gpt-4o-mini-2024-07-18"


def test_model_name_defaults_to_deployment() -> None:
    config = SimulatorConfig(keys=[SimulatedKey(name="east", secret="s")])

    assert config.model_name("my-deployment") == "my-deployment"


def test_key_allows_listed_deployments_only() -> None:
    key = SimulatedKey(name="east", secret="s", deployments=["a"])

    assert key.allows("a")
    assert not key.allows("b")


def test_key_repr_hides_secret() -> None:
    key = SimulatedKey(name="east", secret="very-secret-value")

    assert "very-secret-value" not in repr(key)


def test_error_names_the_invalid_field(tmp_path: Path) -> None:
    path = _write(tmp_path, "keys:\n  - name: east\n    secret: s\nlatency_s: -1\n")

    with pytest.raises(ConfigError) as caught:
        load_simulator_config(path)

    assert "latency_s" in caught.value.message
    assert str(path) in caught.value.message


def test_error_names_the_missing_secret(tmp_path: Path) -> None:
    path = _write(tmp_path, "keys:\n  - name: east\n")

    with pytest.raises(ConfigError) as caught:
        load_simulator_config(path)

    assert "keys.0.secret" in caught.value.message


def test_shared_secret_is_rejected_unnamed(tmp_path: Path) -> None:
    text = "keys:\n  - {name: a, secret: twin-secret}\n  - {name: b, secret: twin-secret}\n"
    path = _write(tmp_path, text)

    with pytest.raises(ConfigError) as caught:
        load_simulator_config(path)

    assert "'a' and 'b' have the same secret" in caught.value.message
    assert "twin-secret" not in caught.value.message


def test_repeated_key_names_are_rejected() -> None:
    keys = [SimulatedKey(name="a", secret="1"), SimulatedKey(name="a", secret="2")]

    with pytest.raises(ValidationError, match="repeated: a"):
        SimulatorConfig(keys=keys)


def test_empty_keys_are_rejected(tmp_path: Path) -> None:
    path = _write(tmp_path, "keys: []\n")

    with pytest.raises(ConfigError, match="keys"):
        load_simulator_config(path)


def test_missing_file_is_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="Cannot read"):
        load_simulator_config(tmp_path / "absent.yaml")


def test_invalid_yaml_is_config_error(tmp_path: Path) -> None:
    path = _write(tmp_path, "keys: [unclosed\n")

    with pytest.raises(ConfigError, match="not valid YAML"):
        load_simulator_config(path)


def test_non_mapping_is_config_error(tmp_path: Path) -> None:
    path = _write(tmp_path, "- just\n- a list\n")

    with pytest.raises(ConfigError, match="must contain a mapping"):
        load_simulator_config(path)
