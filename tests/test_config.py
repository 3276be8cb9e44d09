"""Loading and validating the settings."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from microtopic.config import (
    CONFIG_ENV_VAR,
    DATABASE_URL_ENV_VAR,
    LOCAL_REQUEST_DEADLINE_S,
    LOG_FILE_ENV_VAR,
    LOG_LEVEL_ENV_VAR,
    OTLP_ENDPOINT_ENV_VAR,
    REDIS_URL_ENV_VAR,
    GatewayConfig,
    JobRunnerKind,
    KeyConfig,
    ProviderKind,
    Settings,
    load_settings,
)
from microtopic.errors import ConfigError
from tests.harness import new_secret

SECRET_ENV_VAR = "MICROTOPIC_TEST_EAST_SECRET"
OTLP_TOKEN_ENV_VAR = "MICROTOPIC_TEST_OTLP_TOKEN"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        CONFIG_ENV_VAR,
        DATABASE_URL_ENV_VAR,
        LOG_LEVEL_ENV_VAR,
        LOG_FILE_ENV_VAR,
        OTLP_ENDPOINT_ENV_VAR,
        SECRET_ENV_VAR,
        OTLP_TOKEN_ENV_VAR,
    ):
        monkeypatch.delenv(name, raising=False)


def write_config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "microtopic.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def azure_key_yaml(name: str, secret: str, *, extra: str = "") -> str:
    return (
        f"  - name: {name}\n"
        "    provider: azure\n"
        "    endpoint: https://east.example.test\n"
        "    deployment: gpt-4o-mini\n"
        '    api_version: "2024-10-21"\n'
        f"    secret: {secret}\n"
        f"{extra}"
    )


def test_env_reference_resolves_secret(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = new_secret()
    monkeypatch.setenv(SECRET_ENV_VAR, secret)
    path = write_config(tmp_path, "keys:\n" + azure_key_yaml("east", f"${{{SECRET_ENV_VAR}}}"))

    settings = load_settings(path)

    key = settings.keys[0]
    assert key.secret is not None
    assert key.secret.get_secret_value() == secret


def test_unset_reference_allowed_without_secrets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(SECRET_ENV_VAR, raising=False)
    path = write_config(tmp_path, "keys:\n" + azure_key_yaml("east", f"${{{SECRET_ENV_VAR}}}"))

    settings = load_settings(path, need_secrets=False)

    assert settings.keys[0].name == "east"
    with pytest.raises(ConfigError, match=SECRET_ENV_VAR):
        load_settings(path)


def test_literal_secret_is_kept(tmp_path: Path) -> None:
    secret = new_secret()
    path = write_config(tmp_path, "keys:\n" + azure_key_yaml("east", secret))

    settings = load_settings(path)

    key = settings.keys[0]
    assert key.secret is not None
    assert key.secret.get_secret_value() == secret


@pytest.mark.parametrize(
    "secret",
    [
        "${TOPSECRET-zzz999}",
        "prefix-${MICROTOPIC_TEST_EAST_SECRET}",
        "${MICROTOPIC_TEST_EAST_SECRET}-suffix",
        "$MICROTOPIC_TEST_EAST_SECRET",
        "${1ST_SECRET}",
        "${}-zzz999",
        "$ zzz999",
        "sk-${unclosed",
    ],
)
def test_malformed_env_reference_is_rejected(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, secret: str
) -> None:
    monkeypatch.setenv(SECRET_ENV_VAR, new_secret())
    path = write_config(tmp_path, "keys:\n" + azure_key_yaml("east", f'"{secret}"'))

    with pytest.raises(ConfigError) as caught:
        load_settings(path)

    message = caught.value.message
    assert "keys[0].secret" in message
    assert "`${NAME}` and nothing else" in message
    assert secret not in message
    assert "TOPSECRET" not in message


def test_malformed_gateway_token_is_rejected(tmp_path: Path) -> None:
    path = write_config(tmp_path, 'gateway_api_keys:\n  - "tok-${GATEWAY_TOKEN}-0123456789"\n')

    with pytest.raises(ConfigError) as caught:
        load_settings(path)

    assert "gateway_api_keys[0]" in caught.value.message
    assert "GATEWAY_TOKEN" not in caught.value.message


def test_literal_secret_with_dollar_inside_is_kept(tmp_path: Path) -> None:
    secret = "sk-abc$def-" + new_secret()
    path = write_config(tmp_path, "keys:\n" + azure_key_yaml("east", f'"{secret}"'))

    settings = load_settings(path)

    key = settings.keys[0]
    assert key.secret is not None
    assert key.secret.get_secret_value() == secret


def test_empty_keys_warn_of_local_model(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = write_config(tmp_path, "keys: []\n")

    with caplog.at_level(logging.WARNING, logger="microtopic.config"):
        settings = load_settings(path)

    assert settings.keys == []
    warnings = [record for record in caplog.records if record.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert str(path) in warnings[0].getMessage()
    assert "embedded local model serves every call" in warnings[0].getMessage()


def test_file_without_keys_does_not_warn(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = write_config(tmp_path, "database_url: sqlite+aiosqlite:///./x.db\n")

    with caplog.at_level(logging.WARNING, logger="microtopic.config"):
        load_settings(path)

    assert caplog.records == []


@pytest.mark.parametrize("text", ["", "# nothing set yet\n"])
def test_empty_file_warns_of_local_model(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, text: str
) -> None:
    path = write_config(tmp_path, text)

    with caplog.at_level(logging.WARNING, logger="microtopic.config"):
        load_settings(path)

    warnings = [record.getMessage() for record in caplog.records]
    assert len(warnings) == 1
    assert f"The config file {path} is empty" in warnings[0]


def test_unset_env_var_names_field(tmp_path: Path) -> None:
    path = write_config(tmp_path, "keys:\n" + azure_key_yaml("east", f"${{{SECRET_ENV_VAR}}}"))

    with pytest.raises(ConfigError) as caught:
        load_settings(path)

    assert "keys[0].secret" in caught.value.message
    assert SECRET_ENV_VAR in caught.value.message
    assert str(path) in caught.value.message


def test_empty_env_reference_is_rejected(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SECRET_ENV_VAR, "")
    path = write_config(tmp_path, "keys:\n" + azure_key_yaml("east", f"${{{SECRET_ENV_VAR}}}"))

    with pytest.raises(ConfigError, match=SECRET_ENV_VAR):
        load_settings(path)


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("colour: blue\n", "colour"),
        ("gateway:\n  max_parallel: 3\n", "gateway.max_parallel"),
        ("keys:\n" + azure_key_yaml("east", "x", extra="    region: eu\n"), "keys[0].region"),
    ],
)
def test_unknown_field_is_rejected(tmp_path: Path, text: str, field: str) -> None:
    path = write_config(tmp_path, text)

    with pytest.raises(ConfigError) as caught:
        load_settings(path)

    assert field in caught.value.message


def test_duplicate_key_names_are_rejected(tmp_path: Path) -> None:
    text = "keys:\n" + azure_key_yaml("east", new_secret()) + azure_key_yaml("east", new_secret())
    path = write_config(tmp_path, text)

    with pytest.raises(ConfigError) as caught:
        load_settings(path)

    assert "unique" in caught.value.message
    assert "repeated: east" in caught.value.message


def test_azure_key_needs_api_version() -> None:
    with pytest.raises(ValueError, match="api_version"):
        KeyConfig(
            name="east",
            provider=ProviderKind.AZURE,
            endpoint="https://east.example.test",
            deployment="gpt-4o-mini",
            secret=new_secret(),
        )


def test_missing_api_version_names_key(tmp_path: Path) -> None:
    key = azure_key_yaml("east", new_secret()).replace('    api_version: "2024-10-21"\n', "")
    path = write_config(tmp_path, "keys:\n" + key)

    with pytest.raises(ConfigError) as caught:
        load_settings(path)

    assert "'east'" in caught.value.message
    assert "api_version" in caught.value.message


@pytest.mark.parametrize(
    "field",
    ["request_deadline_s", "call_timeout_s", "local_call_timeout_s", "health_check_timeout_s"],
)
@pytest.mark.parametrize("value", [".inf", "0", "-1", "null"])
def test_unsafe_timeout_is_rejected(tmp_path: Path, field: str, value: str) -> None:
    path = write_config(tmp_path, f"gateway:\n  {field}: {value}\n")

    with pytest.raises(ConfigError) as caught:
        load_settings(path)

    assert f"gateway.{field}" in caught.value.message


def test_validation_error_hides_secret(tmp_path: Path) -> None:
    secret = new_secret()
    key = azure_key_yaml("east", secret, extra="    max_concurrency: 0\n")
    path = write_config(tmp_path, "keys:\n" + key + "gateway:\n  call_timeout_s: .inf\n")

    with pytest.raises(ConfigError) as caught:
        load_settings(path)

    assert "keys[0].max_concurrency" in caught.value.message
    assert secret not in caught.value.message
    assert secret not in str(caught.value)


def test_yaml_syntax_error_hides_secret(tmp_path: Path) -> None:
    secret = new_secret()
    path = write_config(tmp_path, "keys:\n" + azure_key_yaml("east", f'{secret}: "unclosed'))

    with pytest.raises(ConfigError) as caught:
        load_settings(path)

    assert "not valid YAML" in caught.value.message
    assert "line 7" in caught.value.message
    assert secret not in caught.value.message


def test_settings_repr_hides_secret(tmp_path: Path) -> None:
    secret = new_secret()
    path = write_config(tmp_path, "keys:\n" + azure_key_yaml("east", secret))

    settings = load_settings(path)

    assert secret not in repr(settings)
    assert secret not in str(settings)
    assert secret not in settings.model_dump_json()


def test_database_url_env_overrides_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_config(tmp_path, "database_url: sqlite+aiosqlite:///./from-file.db\n")
    monkeypatch.setenv(DATABASE_URL_ENV_VAR, "sqlite+aiosqlite:///./from-env.db")

    settings = load_settings(path)

    assert settings.database_url == "sqlite+aiosqlite:///./from-env.db"


def test_database_url_setting_names_env_var(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_config(tmp_path, "database_url: sqlite+aiosqlite:///./from-file.db\n")
    monkeypatch.setenv(DATABASE_URL_ENV_VAR, "sqlite+aiosqlite:///./from-env.db")

    settings = load_settings(path)

    assert settings.database_url_setting == DATABASE_URL_ENV_VAR


def test_database_url_setting_names_file(tmp_path: Path) -> None:
    path = write_config(tmp_path, "database_url: sqlite+aiosqlite:///./from-file.db\n")

    settings = load_settings(path)

    assert settings.database_url_setting == f"`database_url` in {path}"


def test_database_url_setting_without_source(tmp_path: Path) -> None:
    path = write_config(tmp_path, "log_level: INFO\n")

    settings = load_settings(path)

    assert settings.database_url_setting == "the `database_url` setting"


def test_all_problems_reported_at_once(tmp_path: Path) -> None:
    text = (
        "keys:\n"
        + azure_key_yaml("east", f"${{{SECRET_ENV_VAR}}}")
        + azure_key_yaml("west", new_secret(), extra="    max_concurrency: 0\n")
        + "gateway:\n  call_timeout_s: .inf\n"
        + 'gateway_api_keys:\n  - "tok-${GATEWAY_TOKEN}-0123456789"\n'
    )
    path = write_config(tmp_path, text)

    with pytest.raises(ConfigError) as caught:
        load_settings(path)

    lines = caught.value.message.splitlines()
    assert lines[0] == f"Invalid settings in {path} (4 problems):"
    assert lines[1].startswith(
        f"  keys[0].secret: refers to the environment variable {SECRET_ENV_VAR}"
    )
    assert lines[2].startswith("  gateway_api_keys[0]: is neither a literal secret")
    assert lines[3] == "  keys[1].max_concurrency: Input should be greater than or equal to 1"
    assert lines[4] == "  gateway.call_timeout_s: must be a finite number of seconds"
    assert len(lines) == 5


def test_overriding_env_var_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(REDIS_URL_ENV_VAR, "ftp://:hunter2@cache.example/0")
    path = write_config(tmp_path, "redis_url: redis://127.0.0.1:6379/0\n")

    with pytest.raises(ConfigError) as caught:
        load_settings(path)

    message = caught.value.message
    expected = f"{REDIS_URL_ENV_VAR}: must start with redis://, rediss:// or unix://, not ftp://"
    assert expected in message
    assert "hunter2" not in message


def test_log_level_env_is_upper_cased(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(LOG_LEVEL_ENV_VAR, "debug")

    settings = load_settings()

    assert settings.log_level == "DEBUG"


def test_log_file_env_overrides_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_config(tmp_path, "log_file: shared.log\n")
    monkeypatch.setenv(LOG_FILE_ENV_VAR, str(tmp_path / "worker-1.log"))

    settings = load_settings(path)

    assert settings.log_file == tmp_path / "worker-1.log"


def test_config_env_var_names_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_config(tmp_path, "gateway:\n  max_concurrent_requests: 3\n")
    monkeypatch.setenv(CONFIG_ENV_VAR, str(path))

    settings = load_settings()

    assert settings.gateway.max_concurrent_requests == 3


def test_missing_file_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "absent.yaml"

    with pytest.raises(ConfigError) as caught:
        load_settings(path)

    assert "Cannot read the config file" in caught.value.message
    assert str(path) in caught.value.message


def test_top_level_list_is_rejected(tmp_path: Path) -> None:
    path = write_config(tmp_path, "- east\n- west\n")

    with pytest.raises(ConfigError, match="mapping at the top level"):
        load_settings(path)


def test_empty_file_gives_defaults(tmp_path: Path) -> None:
    path = write_config(tmp_path, "")

    settings = load_settings(path)

    assert settings == Settings()


def test_effective_keys_fall_back_to_local() -> None:
    settings = Settings()

    keys = settings.effective_keys()

    assert len(keys) == 1
    assert keys[0].name == "local"
    assert keys[0].provider is ProviderKind.LOCAL
    assert keys[0].max_concurrency == 1


def test_effective_keys_are_configured_keys() -> None:
    key = KeyConfig(
        name="east",
        provider=ProviderKind.OPENAI,
        endpoint="http://127.0.0.1:9/v1",
        model="qwen",
        secret=new_secret(),
    )
    settings = Settings(keys=[key])

    keys = settings.effective_keys()

    assert keys == [key]


def test_local_default_gets_long_request_deadline() -> None:
    settings = Settings()

    gateway = settings.effective_gateway()

    assert gateway.request_deadline_s == LOCAL_REQUEST_DEADLINE_S


def test_explicit_request_deadline_wins_for_local() -> None:
    settings = Settings(gateway=GatewayConfig(request_deadline_s=5.0))

    gateway = settings.effective_gateway()

    assert gateway.request_deadline_s == 5.0


def test_remote_keys_keep_default_request_deadline() -> None:
    key = KeyConfig(
        name="east",
        provider=ProviderKind.OPENAI,
        endpoint="http://127.0.0.1:9/v1",
        model="qwen",
        secret=new_secret(),
    )
    settings = Settings(keys=[key])

    gateway = settings.effective_gateway()

    assert gateway.request_deadline_s == GatewayConfig().request_deadline_s
    assert gateway.request_deadline_s != LOCAL_REQUEST_DEADLINE_S


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("gateway:\n  selection: fastest\n", "gateway.selection"),
        ("gateway:\n  max_queue_size: -1\n", "gateway.max_queue_size"),
        ("gateway:\n  circuit_breaker:\n    failure_threshold: 0\n", "failure_threshold"),
        ("gateway:\n  quota:\n    time_scale: 0\n", "gateway.quota.time_scale"),
        ("gateway:\n  truncation_retry_factor: 0.5\n", "truncation_retry_factor"),
    ],
)
def test_bad_gateway_setting_is_named(tmp_path: Path, text: str, field: str) -> None:
    path = write_config(tmp_path, text)

    with pytest.raises(ConfigError) as caught:
        load_settings(path)

    assert field in caught.value.message


def test_key_quota_and_priority_are_read(tmp_path: Path) -> None:
    extra = "    requests_per_minute: 600\n    tokens_per_minute: 60000\n    priority: 2\n"
    path = write_config(tmp_path, "keys:\n" + azure_key_yaml("east", new_secret(), extra=extra))

    key = load_settings(path).keys[0]

    assert (key.requests_per_minute, key.tokens_per_minute, key.priority) == (600, 60_000, 2)


def test_cache_is_on_by_default() -> None:
    cache = Settings().cache

    assert cache.enabled is True
    assert cache.ttl_s == 7 * 86_400
    assert cache.max_entries == 1000


def test_cache_settings_are_read(tmp_path: Path) -> None:
    path = write_config(tmp_path, "cache:\n  enabled: false\n  ttl_s: 3600\n  max_entries: 50\n")

    cache = load_settings(path).cache

    assert (cache.enabled, cache.ttl_s, cache.max_entries) == (False, 3600, 50)


def test_jobs_run_in_process_by_default() -> None:
    jobs = Settings().jobs

    assert jobs.runner is JobRunnerKind.IN_PROCESS
    assert jobs.concurrency == 4
    assert jobs.lease_s == 30.0
    assert jobs.max_attempts == 5
    assert jobs.retry_delay_s == 5.0
    assert jobs.max_retry_delay_s == 300.0


def test_arq_runner_without_redis_is_rejected(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(REDIS_URL_ENV_VAR, raising=False)
    path = write_config(tmp_path, "jobs:\n  runner: arq\n")

    with pytest.raises(ConfigError) as caught:
        load_settings(path)

    assert "jobs.runner is arq" in caught.value.message
    assert "redis_url" in caught.value.message


def test_arq_runner_with_redis_is_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(REDIS_URL_ENV_VAR, raising=False)
    text = "redis_url: redis://127.0.0.1:6379/0\njobs:\n  runner: arq\n  lease_s: 5\n"
    path = write_config(tmp_path, text)

    jobs = load_settings(path).jobs

    assert jobs.runner is JobRunnerKind.ARQ
    assert jobs.lease_s == 5.0


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("cache:\n  ttl_s: 0\n", "cache.ttl_s"),
        ("cache:\n  ttl_s: .inf\n", "cache.ttl_s"),
        ("cache:\n  ttl_s: .nan\n", "cache.ttl_s"),
        ("cache:\n  ttl_s: 40000000\n", "cache.ttl_s"),
        ("cache:\n  max_entries: 0\n", "cache.max_entries"),
        ("cache:\n  enabled: maybe\n", "cache.enabled"),
        ("cache:\n  size: 10\n", "cache.size"),
    ],
)
def test_bad_cache_setting_is_named(tmp_path: Path, text: str, field: str) -> None:
    path = write_config(tmp_path, text)

    with pytest.raises(ConfigError) as caught:
        load_settings(path)

    assert field in caught.value.message


@pytest.mark.parametrize("url", ["not a url", "localhost:6379", "127.0.0.1:6379/0"])
def test_redis_url_without_scheme_is_rejected(tmp_path: Path, url: str) -> None:
    path = write_config(tmp_path, f"redis_url: '{url}'\n")

    with pytest.raises(ConfigError) as caught:
        load_settings(path)

    message = caught.value.message
    assert message.endswith(
        "redis_url: must start with redis://, rediss:// or unix://, but the value has no scheme"
    )


@pytest.mark.parametrize("url", ["redis://:hunter2@cache.example:abc/0", "redis://cache:99999"])
def test_redis_url_with_bad_port_is_rejected(tmp_path: Path, url: str) -> None:
    path = write_config(tmp_path, f"redis_url: {url}\n")

    with pytest.raises(ConfigError) as caught:
        load_settings(path)

    assert "redis_url: has an invalid port" in caught.value.message
    assert "hunter2" not in caught.value.message


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("jobs:\n  runner: celery\n", "jobs.runner"),
        ("jobs:\n  lease_s: 0.5\n", "jobs.lease_s"),
        ("jobs:\n  concurrency: 0\n", "jobs.concurrency"),
        ("jobs:\n  max_attempts: 0\n", "jobs.max_attempts"),
    ],
)
def test_bad_jobs_setting_is_named(tmp_path: Path, text: str, field: str) -> None:
    path = write_config(tmp_path, text)

    with pytest.raises(ConfigError) as caught:
        load_settings(path)

    assert field in caught.value.message


def test_traces_are_kept_a_week_by_default() -> None:
    traces = Settings().traces

    assert traces.retention_s == 7 * 86_400
    assert traces.prune_interval_s == 3600


def test_trace_settings_are_read(tmp_path: Path) -> None:
    path = write_config(tmp_path, "traces:\n  retention_s: 86400\n  prune_interval_s: 60\n")

    traces = load_settings(path).traces

    assert (traces.retention_s, traces.prune_interval_s) == (86_400, 60)


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("traces:\n  retention_s: 0\n", "traces.retention_s"),
        ("traces:\n  retention_s: .inf\n", "traces.retention_s"),
        ("traces:\n  prune_interval_s: -1\n", "traces.prune_interval_s"),
        ("traces:\n  keep: 10\n", "traces.keep"),
    ],
)
def test_bad_trace_setting_is_named(tmp_path: Path, text: str, field: str) -> None:
    path = write_config(tmp_path, text)

    with pytest.raises(ConfigError) as caught:
        load_settings(path)

    assert field in caught.value.message


def test_trace_export_is_off_by_default() -> None:
    telemetry = Settings().telemetry

    assert telemetry.otlp_endpoint is None
    assert telemetry.headers == {}
    assert telemetry.service_name == "microtopic"
    assert telemetry.export_timeout_s == 10


def test_telemetry_settings_are_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    token = new_secret()
    monkeypatch.setenv(OTLP_TOKEN_ENV_VAR, token)
    text = (
        "telemetry:\n"
        "  otlp_endpoint: https://otlp.example.test/v1/traces\n"
        f"  headers: {{Authorization: '${{{OTLP_TOKEN_ENV_VAR}}}', X-Scope: team-a}}\n"
        "  service_name: lessons\n"
        "  export_timeout_s: 2.5\n"
    )
    path = write_config(tmp_path, text)

    settings = load_settings(path)

    telemetry = settings.telemetry
    assert telemetry.otlp_endpoint == "https://otlp.example.test/v1/traces"
    assert telemetry.headers["Authorization"].get_secret_value() == token
    assert telemetry.headers["X-Scope"].get_secret_value() == "team-a"
    assert (telemetry.service_name, telemetry.export_timeout_s) == ("lessons", 2.5)
    assert token not in repr(settings)
    assert token not in str(settings.model_dump())


def test_otlp_endpoint_env_overrides_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(OTLP_ENDPOINT_ENV_VAR, "http://127.0.0.1:4318/v1/traces")
    text = "telemetry:\n  otlp_endpoint: http://file.example.test/v1/traces\n  service_name: a\n"
    path = write_config(tmp_path, text)

    telemetry = load_settings(path).telemetry

    assert telemetry.otlp_endpoint == "http://127.0.0.1:4318/v1/traces"
    assert telemetry.service_name == "a"


def test_otlp_endpoint_env_turns_export_on(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(OTLP_ENDPOINT_ENV_VAR, "http://127.0.0.1:4318/v1/traces")

    telemetry = load_settings().telemetry

    assert telemetry.otlp_endpoint == "http://127.0.0.1:4318/v1/traces"


@pytest.mark.parametrize(
    ("endpoint", "problem"),
    [
        ("grpc://127.0.0.1:4317", "http or https URL"),
        ("127.0.0.1:4318/v1/traces", "http or https URL"),
        ("http:///v1/traces", "http or https URL"),
        ("https://user:zzz999@otlp.example.test/v1/traces", "telemetry.headers"),
        ("http://127.0.0.1:99999/v1/traces", "invalid port"),
    ],
)
def test_bad_otlp_endpoint_is_named(tmp_path: Path, endpoint: str, problem: str) -> None:
    path = write_config(tmp_path, f"telemetry:\n  otlp_endpoint: '{endpoint}'\n")

    with pytest.raises(ConfigError) as caught:
        load_settings(path)

    assert "telemetry.otlp_endpoint" in caught.value.message
    assert problem in caught.value.message
    assert "zzz999" not in caught.value.message


def test_bad_otlp_endpoint_env_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(OTLP_ENDPOINT_ENV_VAR, "ftp://127.0.0.1/v1/traces")

    with pytest.raises(ConfigError) as caught:
        load_settings()

    assert "telemetry.otlp_endpoint" in caught.value.message


@pytest.mark.parametrize(
    ("headers", "problem"),
    [
        ('{"Bad Name": zzz999}', "not a valid HTTP header name"),
        ('{Authorization: "Bearer zzz999\\r\\nX-Other: 1"}', "line break"),
        ('{Authorization: " Bearer zzz999"}', "white space"),
        ('{Authorization: ""}', "is empty"),
        ("{Authorization: '${MICROTOPIC_TEST_OTLP_TOKEN}'}", OTLP_TOKEN_ENV_VAR),
        ("{Authorization: 'Bearer ${MICROTOPIC_TEST_OTLP_TOKEN}'}", "nothing else"),
    ],
)
def test_bad_otlp_header_is_named(tmp_path: Path, headers: str, problem: str) -> None:
    path = write_config(tmp_path, f"telemetry:\n  headers: {headers}\n")

    with pytest.raises(ConfigError) as caught:
        load_settings(path)

    assert "telemetry.headers" in caught.value.message
    assert problem in caught.value.message
    assert "zzz999" not in caught.value.message


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("telemetry:\n  export_timeout_s: 0\n", "telemetry.export_timeout_s"),
        ("telemetry:\n  export_timeout_s: .inf\n", "telemetry.export_timeout_s"),
        ("telemetry:\n  service_name: ''\n", "telemetry.service_name"),
        ("telemetry:\n  endpoint: http://127.0.0.1:4318\n", "telemetry.endpoint"),
    ],
)
def test_bad_telemetry_setting_is_named(tmp_path: Path, text: str, field: str) -> None:
    path = write_config(tmp_path, text)

    with pytest.raises(ConfigError) as caught:
        load_settings(path)

    assert field in caught.value.message
