"""The `microtopic` commands `generate` and `db upgrade`, invalid configs, and error codes."""

from __future__ import annotations

import json
import socket
import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from microtopic.config import DATABASE_URL_ENV_VAR
from microtopic.domain import GeneratedTopic
from microtopic.simulator import SimulatorServer
from tests.cli.support import KEY_NAMES, Cli, one_line
from tests.processes import free_port

TOPIC_ARGS = ("generate", "--subject", "Mathematics", "--topic", "Linear equations")
MISSING_VARIABLE = "MICROTOPIC_TEST_UNSET_SECRET"
TOKEN_VARIABLE = "MICROTOPIC_TEST_GATEWAY_TOKEN"


def section_lines(markdown: str, prefix: str) -> list[str]:
    return [line for line in markdown.splitlines() if line.startswith(prefix)]


def simulator_calls(simulator: SimulatorServer) -> int:
    response = httpx.get(f"{simulator.base_url}/_simulator/stats")
    response.raise_for_status()
    return int(response.json()["total"]["calls"])


def set_fault(simulator: SimulatorServer, key_name: str, kind: str, **fields: Any) -> None:
    response = httpx.put(
        f"{simulator.base_url}/_simulator/keys/{key_name}/fault", json={"kind": kind, **fields}
    )
    response.raise_for_status()


def table_names(database_path: Path) -> set[str]:
    with closing(sqlite3.connect(database_path)) as connection:
        rows = connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        return {name for (name,) in rows}


def test_generate_prints_markdown_lesson(cli: Cli, config_file: Path) -> None:
    result = cli.run(*TOPIC_ARGS, "--config", str(config_file))

    assert result.exit_code == 0, result.stderr
    assert result.stdout.startswith("# Mathematics: Linear equations\n")
    sections = section_lines(result.stdout, "## ")
    assert len(sections) >= 3
    assert len(section_lines(result.stdout, "### Quiz")) == len(sections)
    assert f"{len(sections)} microtopics" in result.stderr


def test_generate_json_is_generated_topic(cli: Cli, config_file: Path) -> None:
    result = cli.run(*TOPIC_ARGS, "--json", "--config", str(config_file))

    assert result.exit_code == 0, result.stderr
    topic = GeneratedTopic.model_validate_json(result.stdout)
    assert topic.subject_name == "Mathematics"
    assert topic.topic_name == "Linear equations"
    assert topic.course_id == "cli"
    assert len(topic.microtopics) >= 3
    assert all(len(microtopic.quiz) >= 2 for microtopic in topic.microtopics)


def test_named_microtopics_skip_planner(
    cli: Cli, config_file: Path, simulator: SimulatorServer
) -> None:
    result = cli.run(
        *TOPIC_ARGS,
        "--json",
        "--microtopic",
        "Slope",
        "--microtopic",
        "Intercepts",
        "--config",
        str(config_file),
    )

    assert result.exit_code == 0, result.stderr
    topic = GeneratedTopic.model_validate_json(result.stdout)
    assert len(topic.microtopics) == 2
    # Two writer calls and two quiz calls, so a planner call would make five.
    assert simulator_calls(simulator) == 4


def test_generate_says_when_cached(
    cli: Cli, config_file: Path, simulator: SimulatorServer, redis_url: str, redis_namespace: str
) -> None:
    # Each run is a process of its own, so only a cache in Redis outlives it.
    config = yaml.safe_load(config_file.read_text(encoding="utf-8"))
    config.update(redis_url=redis_url, redis_namespace=redis_namespace)
    config_file.write_text(yaml.safe_dump(config), encoding="utf-8")
    first = cli.run(*TOPIC_ARGS, "--config", str(config_file))
    calls = simulator_calls(simulator)

    second = cli.run(*TOPIC_ARGS, "--config", str(config_file))

    assert first.exit_code == 0, first.stderr
    assert "LLM calls" in first.stderr
    assert second.exit_code == 0, second.stderr
    assert "from the cache (no LLM calls)" in one_line(second.stderr)
    assert "--retry" in second.stderr
    assert second.stdout == first.stdout
    assert simulator_calls(simulator) == calls


def test_db_upgrade_creates_tables(cli: Cli, config_file: Path, database_path: Path) -> None:
    result = cli.run("db", "upgrade", "--config", str(config_file))

    assert result.exit_code == 0, result.stderr
    assert "database is up to date" in result.stderr
    tables = table_names(database_path)
    assert {"generation_requests", "generated_topics", "llm_calls", "alembic_version"} <= tables


def test_db_upgrade_twice_is_harmless(cli: Cli, config_file: Path, database_path: Path) -> None:
    first = cli.run("db", "upgrade", "--config", str(config_file))

    second = cli.run("db", "upgrade", "--config", str(config_file))

    assert first.exit_code == 0, first.stderr
    assert second.exit_code == 0, second.stderr
    assert "llm_calls" in table_names(database_path)


def test_unset_secret_variable_exits_2(
    cli: Cli, config_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(MISSING_VARIABLE, raising=False)
    config = yaml.safe_load(config_file.read_text(encoding="utf-8"))
    config["keys"][1]["secret"] = "${" + MISSING_VARIABLE + "}"
    config_file.write_text(yaml.safe_dump(config), encoding="utf-8")

    result = cli.run(*TOPIC_ARGS, "--config", str(config_file))

    assert result.exit_code == 2
    message = one_line(result.stderr)
    assert message.startswith("error [invalid_config]: ")
    assert MISSING_VARIABLE in message
    assert "keys[1].secret" in message
    assert "not set or empty" in message
    assert result.stdout == ""


def test_gateway_token_from_environment(
    cli: Cli, config_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(TOKEN_VARIABLE, "gw-test-" + "0" * 32)
    config = yaml.safe_load(config_file.read_text(encoding="utf-8"))
    config["gateway_api_keys"] = ["${" + TOKEN_VARIABLE + "}"]
    config_file.write_text(yaml.safe_dump(config), encoding="utf-8")

    result = cli.run("keys", "--config", str(config_file))

    assert result.exit_code == 0, result.stderr


def test_unset_gateway_token_variable_exits_2(
    cli: Cli, config_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(TOKEN_VARIABLE, raising=False)
    config = yaml.safe_load(config_file.read_text(encoding="utf-8"))
    config["gateway_api_keys"] = ["${" + TOKEN_VARIABLE + "}"]
    config_file.write_text(yaml.safe_dump(config), encoding="utf-8")

    result = cli.run("keys", "--config", str(config_file))

    assert result.exit_code == 2
    message = one_line(result.stderr)
    assert TOKEN_VARIABLE in message
    assert "gateway_api_keys[0]" in message
    assert "not set or empty" in message


def test_short_gateway_token_exits_2(cli: Cli, config_file: Path) -> None:
    config = yaml.safe_load(config_file.read_text(encoding="utf-8"))
    config["gateway_api_keys"] = ["gw-short-7f3a"]
    config_file.write_text(yaml.safe_dump(config), encoding="utf-8")

    result = cli.run("keys", "--config", str(config_file))

    assert result.exit_code == 2
    message = one_line(result.stderr)
    assert "gateway_api_keys[0] is shorter than 16 characters" in message
    assert "gw-short-7f3a" not in result.output


def test_empty_topic_exits_2(cli: Cli, config_file: Path, database_path: Path) -> None:
    result = cli.run(
        "generate", "--subject", "Mathematics", "--topic", "", "--config", str(config_file)
    )

    assert result.exit_code == 2
    message = one_line(result.stderr)
    assert message.startswith("error [invalid_request]: ")
    assert "invalid input: --topic: String should have at least 1 character." in message
    assert "errors.pydantic.dev" not in message
    assert result.stdout == ""
    assert not database_path.exists()


def test_failed_generation_exits_1(
    cli: Cli, config_file: Path, simulator: SimulatorServer, key_secrets: dict[str, str]
) -> None:
    for name in KEY_NAMES:
        set_fault(simulator, name, "revoked")

    result = cli.run(*TOPIC_ARGS, "--config", str(config_file))

    assert result.exit_code == 1
    message = one_line(result.stderr)
    assert "error [all_keys_failed]: All 3 attempts failed" in message
    for name in KEY_NAMES:
        assert f"{name}: the key was rejected (401)" in message
    for secret in key_secrets.values():
        assert secret not in result.output
    assert result.stdout == ""


@pytest.mark.parametrize(("flags", "exit_code"), [((), 1), (("--retry",), 0)])
def test_retry_flag_gets_retry_strategy(
    cli: Cli, config_file: Path, simulator: SimulatorServer, flags: tuple[str, ...], exit_code: int
) -> None:
    # One failure on each of the 3 keys: a first request makes 3 attempts, a retry makes 4.
    for name in KEY_NAMES:
        set_fault(simulator, name, "server_error", count=1)

    result = cli.run(*TOPIC_ARGS, "-m", "Slope", *flags, "--config", str(config_file))

    assert result.exit_code == exit_code, result.stderr
    assert simulator_calls(simulator) == (3 if exit_code else 4 + 1)


@pytest.mark.local_model
def test_local_model_writes_one_lesson(
    cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(DATABASE_URL_ENV_VAR, f"sqlite+aiosqlite:///{tmp_path / 'local.db'}")

    result = cli.run(*TOPIC_ARGS, "--microtopic", "Solving one-step equations")

    assert result.exit_code == 0, result.stderr
    assert result.stdout.startswith("# Mathematics: Linear equations\n")
    assert len(section_lines(result.stdout, "## ")) == 1
    assert len(section_lines(result.stdout, "### Quiz")) == 1
    assert "1 microtopics" in result.stderr


def test_every_failure_prints_its_code(cli: Cli, config_file: Path, tmp_path: Path) -> None:
    bad_config = tmp_path / "bad.yaml"
    bad_config.write_text("keys: [{name: east, provider: nowhere}]\n", encoding="utf-8")
    markup_topic = "[bold]Linear[/bold]"
    cases = [
        (("keys", "--config", str(bad_config)), 2, "invalid_config"),
        (("generate", "--subject", "", "--topic", markup_topic), 2, "invalid_request"),
        (("simulate", "--key", "no-secret"), 2, "invalid_request"),
        (("keys", "check", "--server", "http://127.0.0.1:9"), 1, "service_unreachable"),
        (("stats", "--server", "http://127.0.0.1:9"), 1, "service_unreachable"),
    ]

    results = [(cli.run(*args), exit_code, code) for args, exit_code, code in cases]

    for result, exit_code, code in results:
        assert result.exit_code == exit_code, result.stderr
        assert one_line(result.stderr).startswith(f"error [{code}]: "), result.stderr


@pytest.mark.parametrize(
    "args",
    [
        ("stats",),
        ("keys",),
        ("keys", "check"),
        ("trace", "0" * 32),
        ("jobs", "show", "0" * 32),
    ],
    ids=" ".join,
)
@pytest.mark.parametrize("server", ["ftp://127.0.0.1:8001", "127.0.0.1:8001", "http://h:port"])
def test_bad_server_url_is_usage_error(cli: Cli, args: tuple[str, ...], server: str) -> None:
    result = cli.run(*args, "--server", server)

    assert result.exit_code == 2
    assert "Invalid value for '--server': must " in one_line(result.stderr)


@pytest.mark.parametrize("command", ["serve", "simulate"])
def test_port_out_of_range_is_usage_error(cli: Cli, command: str) -> None:
    result = cli.run(command, "--port", "99999")

    assert result.exit_code == 2
    assert "Invalid value for '--port'" in one_line(result.stderr)


@pytest.mark.parametrize("command", [("serve",), ("simulate", "--key", "east=secret")], ids=str)
def test_port_in_use_fails_before_start(cli: Cli, command: tuple[str, ...]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = cli.run(*command, "--port", str(port))

    assert result.exit_code == 1
    message = one_line(result.stderr)
    assert f"error [address_unavailable]: Cannot listen on 127.0.0.1:{port}" in message
    assert "choose another with --port" in message
    assert "startup" not in result.stdout + result.stderr
    error_lines = [line for line in result.stderr.splitlines() if line.startswith("error [")]
    assert len(error_lines) == 1
    assert error_lines[0].endswith("choose another with --port.")  # not wrapped at 80 columns


def test_serve_on_foreign_address_fails(cli: Cli) -> None:
    # 192.0.2.1 is reserved for documentation (RFC 5737), so no machine here has it.
    result = cli.run("serve", "--host", "192.0.2.1", "--port", "8001")

    assert result.exit_code == 1
    message = one_line(result.stderr)
    assert "Cannot listen on 192.0.2.1:8001" in message
    assert "may not be an address of this machine" in message
    assert "--port" not in message


def test_error_message_brackets_are_printed(cli: Cli, tmp_path: Path) -> None:
    result = cli.run("simulate", "--key", "[bold]east")

    assert result.exit_code == 2
    assert "[bold]east" in one_line(result.stderr)


@pytest.mark.parametrize("command", [("keys",), ("serve", "--port", str(free_port()))], ids=str)
def test_missing_database_is_invalid_config(
    cli: Cli, config_file: Path, postgres_database_url: str, command: tuple[str, ...]
) -> None:
    absent = postgres_database_url.replace("/microtopic_test_", "/absent_microtopic_test_")
    config = yaml.safe_load(config_file.read_text(encoding="utf-8"))
    config["database_url"] = absent
    config_file.write_text(yaml.safe_dump(config), encoding="utf-8")

    result = cli.run(*command, "--config", str(config_file))

    assert result.exit_code == 2
    message = one_line(result.stderr)
    assert "error [invalid_config]: " in message  # serve logs its start-up first
    assert "has no database named 'absent_microtopic_test_" in message
    assert f"correct `database_url` in {config_file}." in message
    assert DATABASE_URL_ENV_VAR not in message


def test_mysql_url_from_env_is_invalid_config(
    cli: Cli, config_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(DATABASE_URL_ENV_VAR, "mysql://writer:hunter2@127.0.0.1/microtopic")

    result = cli.run("keys", "--config", str(config_file))

    assert result.exit_code == 2
    message = one_line(result.stderr)
    assert message.startswith("error [invalid_config]: ")
    assert f"from {DATABASE_URL_ENV_VAR}, names the synchronous driver 'mysql'" in message
    assert "hunter2" not in message


def test_unwritable_log_file_is_invalid_config(cli: Cli, config_file: Path, tmp_path: Path) -> None:
    config = yaml.safe_load(config_file.read_text(encoding="utf-8"))
    config["log_file"] = str(tmp_path / "missing-folder" / "microtopic.log")
    config_file.write_text(yaml.safe_dump(config), encoding="utf-8")

    result = cli.run("keys", "--config", str(config_file))

    assert result.exit_code == 2
    message = one_line(result.stderr)
    assert message.startswith("error [invalid_config]: Cannot open the log file ")
    assert "missing-folder" in message


def test_log_file_gets_json_lines_with_context(
    cli: Cli, config_file: Path, simulator: SimulatorServer, tmp_path: Path
) -> None:
    log_file = tmp_path / "microtopic.log"
    config = yaml.safe_load(config_file.read_text(encoding="utf-8"))
    config["log_file"] = str(log_file)
    config_file.write_text(yaml.safe_dump(config), encoding="utf-8")
    set_fault(simulator, "west", "revoked")

    result = cli.run(*TOPIC_ARGS, "-m", "Slope", "--config", str(config_file))

    assert result.exit_code == 0, result.stderr
    lines = [json.loads(line) for line in log_file.read_text(encoding="utf-8").splitlines()]
    assert lines
    assert all({"time", "level", "logger", "message"} <= set(line) for line in lines)
    disabled = [line for line in lines if line["message"].startswith("key west disabled")]
    assert len(disabled) == 1
    assert disabled[0]["key"] == "west"
    request_id = disabled[0]["request_id"]
    assert f"request {request_id}:" in result.stderr
