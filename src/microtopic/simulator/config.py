"""Settings of the simulator: its keys with their quotas, latency, faults and clock.

A config file is YAML, for example:

    seed: 7
    time_scale: 10
    latency_s: 0.05
    latency_per_output_token_s: 0.002
    latency_jitter: 0.2
    fault_rates: {server_error: 0.02}
    keys:
      - name: east
        secret: sim-east-secret
        deployments: [gpt-4o-mini]
        requests_per_minute: 60
        tokens_per_minute: 30000
      - name: west
        secret: sim-west-secret
    models:
      gpt-4o-mini: gpt-4o-mini-2024-07-18

The secrets are made up: the simulator only compares them with the key a client sends.
docs/simulator.md describes every field.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Self

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from microtopic.errors import ConfigError, field_path
from microtopic.simulator.faults import FaultKind, FaultRates, validate_fault_rates
from microtopic.simulator.quota import request_limit, token_limit

# Upper bounds that catch typos. No test needs a window longer than an hour, or a clock
# more than 10 000 times faster than real time.
MAX_WINDOW_S = 3600
MAX_TIME_SCALE = 10_000
MAX_DELAY_S = 86_400


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SimulatedKey(_Frozen):
    """One key the simulator accepts, and the deployments it may call (None: any)."""

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.\-]+$")
    secret: SecretStr = Field(repr=False)
    deployments: list[str] | None = Field(
        default=None, description="Deployment or model names this key may call; None allows any."
    )
    requests_per_minute: int | None = Field(
        default=None, ge=1, description="Request quota per minute, or None for no limit."
    )
    tokens_per_minute: int | None = Field(
        default=None, ge=1, description="Token quota per minute, or None for no limit."
    )
    fault_rates: FaultRates = Field(
        default_factory=dict,
        description="Probability per call of each fault kind, replacing the global rate.",
    )

    @field_validator("secret")
    @classmethod
    def _secret_is_not_empty(cls, secret: SecretStr) -> SecretStr:
        if not secret.get_secret_value().strip():
            raise ValueError("must not be empty")
        return secret

    @field_validator("deployments")
    @classmethod
    def _deployments_are_named(cls, deployments: list[str] | None) -> list[str] | None:
        if deployments is not None and any(not name.strip() for name in deployments):
            raise ValueError("deployment names must not be empty")
        return deployments

    @field_validator("fault_rates")
    @classmethod
    def _fault_rates_are_valid(cls, rates: FaultRates) -> FaultRates:
        validate_fault_rates(rates)
        return rates

    def allows(self, deployment: str) -> bool:
        """Return whether this key may call `deployment`."""
        return self.deployments is None or deployment in self.deployments


class SimulatorConfig(_Frozen):
    """Everything the simulator needs, validated once when it starts."""

    keys: list[SimulatedKey] = Field(min_length=1)
    latency_s: float = Field(
        default=0.0, ge=0, le=600, description="Base delay in real seconds of each 200 reply."
    )
    latency_per_output_token_s: float = Field(
        default=0.0, ge=0, le=1, description="Delay in real seconds added per completion token."
    )
    latency_jitter: float = Field(
        default=0.0,
        ge=0,
        le=1,
        description="Each delay is multiplied by a uniform factor in [1 - jitter, 1 + jitter].",
    )
    rpm_window_s: int = Field(
        default=10,
        ge=1,
        le=MAX_WINDOW_S,
        description="Sliding window of the request quota, in simulated seconds.",
    )
    tpm_window_s: int = Field(
        default=60,
        ge=1,
        le=MAX_WINDOW_S,
        description="Sliding window of the token quota, in simulated seconds.",
    )
    default_max_tokens: int = Field(
        default=4096,
        ge=1,
        description="Output tokens charged for a request without max_tokens.",
    )
    time_scale: float = Field(
        default=1.0,
        gt=0,
        le=MAX_TIME_SCALE,
        description="Simulated seconds per real second, so 10 makes a minute pass in 6 s.",
    )
    hang_s: float = Field(
        default=600.0,
        gt=0,
        le=MAX_DELAY_S,
        description="Real seconds a `hang` fault holds a call open before it returns 408.",
    )
    fault_rates: FaultRates = Field(
        default_factory=dict, description="Probability per call of each fault kind, for all keys."
    )
    models: dict[str, str] = Field(
        default_factory=dict,
        description="Model name that replies report for each deployment, by default its name.",
    )
    seed: int | None = Field(
        default=None, description="Seed for generated content; None gives different content."
    )

    @field_validator(
        "latency_s", "latency_per_output_token_s", "latency_jitter", "time_scale", "hang_s"
    )
    @classmethod
    def _is_finite(cls, value: float) -> float:
        if not math.isfinite(value):
            raise ValueError("must be a finite number")
        return value

    @field_validator("fault_rates")
    @classmethod
    def _fault_rates_are_valid(cls, rates: FaultRates) -> FaultRates:
        validate_fault_rates(rates)
        return rates

    @field_validator("keys")
    @classmethod
    def _keys_are_distinct(cls, keys: list[SimulatedKey]) -> list[SimulatedKey]:
        names = [key.name for key in keys]
        repeated_names = sorted({name for name in names if names.count(name) > 1})
        if repeated_names:
            raise ValueError(f"key names must be unique; repeated: {', '.join(repeated_names)}")

        owners: dict[str, str] = {}
        for key in keys:
            secret = key.secret.get_secret_value()
            if secret in owners:
                # Name the keys, never the secret they share.
                raise ValueError(f"keys {owners[secret]!r} and {key.name!r} have the same secret")
            owners[secret] = key.name
        return keys

    @model_validator(mode="after")
    def _quotas_fit_their_windows(self) -> Self:
        for key in self.keys:
            validate_fault_rates(self.fault_rates_for(key))
            if self.token_limit(key) == 0:
                raise ValueError(
                    f"key {key.name!r}: tokens_per_minute {key.tokens_per_minute} allows no "
                    f"token in a window of {self.tpm_window_s} s. Raise it to at least "
                    f"{math.ceil(60 / self.tpm_window_s)} or lengthen tpm_window_s"
                )
        return self

    def model_name(self, deployment: str) -> str:
        """Return the model name reported in replies for `deployment`."""
        return self.models.get(deployment, deployment)

    def fault_rates_for(self, key: SimulatedKey) -> dict[FaultKind, float]:
        """Return the fault rates of `key`: the global rates, replaced kind by kind by its own."""
        return {**self.fault_rates, **key.fault_rates}

    def request_limit(self, key: SimulatedKey) -> int | None:
        """Return the requests `key` may make in one rpm window, or None if unlimited."""
        if key.requests_per_minute is None:
            return None
        return request_limit(key.requests_per_minute, self.rpm_window_s)

    def token_limit(self, key: SimulatedKey) -> int | None:
        """Return the tokens `key` may be charged in one tpm window, or None if unlimited."""
        if key.tokens_per_minute is None:
            return None
        return token_limit(key.tokens_per_minute, self.tpm_window_s)


def override_simulator_config(
    config: SimulatorConfig,
    *,
    extra_keys: Sequence[SimulatedKey] = (),
    time_scale: float | None = None,
) -> SimulatorConfig:
    """Return `config` with `extra_keys` appended and `time_scale` replaced, validated again.

    Raises ConfigError, naming each invalid field, when the result is not a valid config
    (a key name used twice, for example).
    """
    fields = {name: getattr(config, name) for name in SimulatorConfig.model_fields}
    fields["keys"] = [*config.keys, *extra_keys]
    if time_scale is not None:
        fields["time_scale"] = time_scale
    try:
        return SimulatorConfig.model_validate(fields)
    except ValidationError as exc:
        raise ConfigError(f"Invalid simulator settings: {_describe(exc)}") from None


def load_simulator_config(path: Path | str) -> SimulatorConfig:
    """Read and validate a simulator config file.

    Raises ConfigError, naming the file and each invalid field, when the file cannot be read,
    is not YAML, or does not describe a valid config.
    """
    path = Path(path)
    raw = _read_yaml(path)
    try:
        return SimulatorConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"Invalid simulator config in {path}: {_describe(exc)}") from None


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(
            f"Cannot read the simulator config file {path}: {exc.strerror}."
        ) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"The simulator config file {path} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(
            f"The simulator config file {path} must contain a mapping with at least `keys`."
        )
    return data


def _describe(exc: ValidationError) -> str:
    # Only locations and messages, because pydantic's default text echoes the input,
    # secrets included.
    parts = []
    for error in exc.errors(include_input=False, include_url=False):
        location = field_path(error["loc"], whole="config")
        parts.append(f"{location}: {error['msg']}")
    return "; ".join(parts) + "."
