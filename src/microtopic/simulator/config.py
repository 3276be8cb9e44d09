"""Settings of the simulator: which keys it accepts, which deployments each may call.

A config file is YAML, for example:

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

The secrets are made up: the simulator only compares them with the key a client sends.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from microtopic.errors import ConfigError


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SimulatedKey(_Frozen):
    """One key the simulator accepts, and the deployments it may call (None: any)."""

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.\-]+$")
    secret: SecretStr = Field(repr=False)
    deployments: list[str] | None = Field(
        default=None, description="Deployment or model names this key may call; None allows any."
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

    def allows(self, deployment: str) -> bool:
        """Return whether this key may call `deployment`."""
        return self.deployments is None or deployment in self.deployments


class SimulatorConfig(_Frozen):
    """Everything the simulator needs, validated once when it starts."""

    keys: list[SimulatedKey] = Field(min_length=1)
    latency_s: float = Field(
        default=0.0, ge=0, le=600, description="Delay in seconds before each successful reply."
    )
    models: dict[str, str] = Field(
        default_factory=dict,
        description="Model name that replies report for each deployment, by default its name.",
    )
    seed: int | None = Field(
        default=None, description="Seed for generated content; None gives different content."
    )

    @field_validator("latency_s")
    @classmethod
    def _latency_is_finite(cls, latency_s: float) -> float:
        if not math.isfinite(latency_s):
            raise ValueError("must be a finite number of seconds")
        return latency_s

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

    def model_name(self, deployment: str) -> str:
        """Return the model name reported in replies for `deployment`."""
        return self.models.get(deployment, deployment)


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
        location = ".".join(str(part) for part in error["loc"]) or "config"
        parts.append(f"{location}: {error['msg']}")
    return "; ".join(parts) + "."
