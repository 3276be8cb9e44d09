"""Loading and validating the simulator config."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from microtopic.errors import ConfigError
from microtopic.simulator import (
    FaultKind,
    SimulatedKey,
    SimulatorConfig,
    load_simulator_config,
    override_simulator_config,
)

VALID_YAML = """
latency_s: 0.05
latency_per_output_token_s: 0.002
latency_jitter: 0.25
seed: 7
time_scale: 10
rpm_window_s: 1
tpm_window_s: 30
default_max_tokens: 2048
hang_s: 30
fault_rates: {server_error: 0.02, truncated: 0.01}
keys:
  - name: east
    secret: sim-east-secret
    deployments: [gpt-4o-mini]
    requests_per_minute: 120
    tokens_per_minute: 60000
    fault_rates: {server_error: 0.5}
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
    assert config.latency_per_output_token_s == 0.002
    assert config.latency_jitter == 0.25
    assert config.seed == 7
    assert config.time_scale == 10
    assert config.rpm_window_s == 1
    assert config.tpm_window_s == 30
    assert config.default_max_tokens == 2048
    assert config.hang_s == 30
    assert config.model_name("gpt-4o-mini") == "gpt-4o-mini-2024-07-18"
    assert config.keys[0].requests_per_minute == 120
    assert config.keys[0].tokens_per_minute == 60000
    assert config.keys[1].requests_per_minute is None


def test_defaults_match_azure_windows() -> None:
    config = SimulatorConfig(keys=[SimulatedKey(name="east", secret="s")])

    assert config.rpm_window_s == 10
    assert config.tpm_window_s == 60
    assert config.default_max_tokens == 4096
    assert config.time_scale == 1.0
    assert config.hang_s == 600
    assert config.latency_s == 0


def test_limits_per_window_follow_quotas(tmp_path: Path) -> None:
    config = load_simulator_config(_write(tmp_path, VALID_YAML))

    east, west = config.keys

    assert config.request_limit(east) == 2
    assert config.token_limit(east) == 30000
    assert config.request_limit(west) is None
    assert config.token_limit(west) is None


def test_key_fault_rates_replace_global_ones(tmp_path: Path) -> None:
    config = load_simulator_config(_write(tmp_path, VALID_YAML))

    east, west = config.keys

    assert config.fault_rates_for(east) == {FaultKind.SERVER_ERROR: 0.5, FaultKind.TRUNCATED: 0.01}
    assert config.fault_rates_for(west) == {FaultKind.SERVER_ERROR: 0.02, FaultKind.TRUNCATED: 0.01}


def test_merged_rates_over_one_rejected() -> None:
    key = SimulatedKey(name="east", secret="s", fault_rates={FaultKind.HANG: 0.7})

    with pytest.raises(ValidationError, match=r"add up to 1\.2"):
        SimulatorConfig(keys=[key], fault_rates={FaultKind.REVOKED: 0.5})


def test_token_quota_below_window_rejected() -> None:
    key = SimulatedKey(name="east", secret="s", tokens_per_minute=30)

    with pytest.raises(ValidationError, match="Raise it to at least 60"):
        SimulatorConfig(keys=[key], tpm_window_s=1)


@pytest.mark.parametrize(
    "fields",
    [
        {"time_scale": 0},
        {"time_scale": float("inf")},
        {"rpm_window_s": 0},
        {"tpm_window_s": 3601},
        {"default_max_tokens": 0},
        {"latency_jitter": 1.5},
        {"hang_s": 0},
        {"fault_rates": {"flaky": 0.1}},
        {"fault_rates": {"hang": 1.5}},
    ],
)
def test_invalid_setting_is_rejected(fields: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        SimulatorConfig.model_validate({"keys": [{"name": "east", "secret": "s"}], **fields})


def test_override_sets_scale_and_keys(tmp_path: Path) -> None:
    config = load_simulator_config(_write(tmp_path, VALID_YAML))

    overridden = override_simulator_config(
        config, extra_keys=[SimulatedKey(name="north", secret="n")], time_scale=60
    )

    assert overridden.time_scale == 60
    assert [key.name for key in overridden.keys] == ["east", "west", "north"]
    assert overridden.keys[0].tokens_per_minute == 60000
    assert overridden.fault_rates == config.fault_rates


def test_override_validates_again() -> None:
    config = SimulatorConfig(keys=[SimulatedKey(name="east", secret="s")])

    with pytest.raises(ConfigError) as caught:
        override_simulator_config(config, extra_keys=[SimulatedKey(name="east", secret="t")])

    assert "repeated: east" in caught.value.message


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

    assert "keys[0].secret" in caught.value.message


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
