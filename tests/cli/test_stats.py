"""`microtopic stats`: a running service's stats as tables, and the errors without one."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from microtopic.cli.stats import ERROR_COLUMNS, KEY_COLUMNS, OPERATION_COLUMNS
from microtopic.config import load_settings
from microtopic.simulator import SimulatorServer
from tests.api.support import CLIENT_BODY, GENERATE_PATH
from tests.app_server import AppServer
from tests.cli.support import KEY_NAMES, NARROW_ENV, Cli, one_line, table_lines


def table_rows(output: str, title: str, columns: tuple[str, ...]) -> dict[str, dict[str, str]]:
    """Return the rows of the Rich table under `title`, by first cell."""
    text = output[output.index(title) :]
    rows = {}
    for line in text.splitlines()[1:]:
        if not line.strip():
            break
        cells = [cell.strip() for cell in re.split(r"[│┃|]", line)[1:-1]]
        if len(cells) == len(columns) and cells[0] and cells[0] != columns[0]:
            rows[cells[0]] = dict(zip(columns, cells, strict=True))
    return rows


def set_fault(simulator: SimulatorServer, key_name: str, kind: str, **fields: object) -> None:
    response = httpx.put(
        f"{simulator.base_url}/_simulator/keys/{key_name}/fault", json={"kind": kind, **fields}
    )
    response.raise_for_status()


@pytest.fixture
def app_server(config_file: Path) -> Iterator[AppServer]:
    """The service, serving the config file's keys."""
    with AppServer(load_settings(config_file)) as server:
        yield server


def test_stats_show_keys_and_operations(
    cli: Cli, app_server: AppServer, simulator: SimulatorServer
) -> None:
    set_fault(simulator, "west", "revoked")
    set_fault(simulator, "north", "rate_limit", retry_after_ms=30_000, count=1)
    generated = httpx.post(app_server.base_url + GENERATE_PATH, json=CLIENT_BODY, timeout=30.0)

    result = cli.run("stats", "--server", app_server.base_url)

    assert generated.status_code == 200
    assert result.exit_code == 0, result.stderr
    assert f"Service at {app_server.base_url}" in result.stdout
    assert "calls since start" in result.stdout
    keys = table_rows(result.stdout, "Keys (", KEY_COLUMNS)
    assert sorted(keys) == sorted(KEY_NAMES)
    assert keys["west"]["state"] == "disabled"
    assert keys["west"]["errors by class"] == "upstream_auth_failed 1"
    assert keys["north"]["state"] == "cooling"
    assert 20 < float(keys["north"]["cooldown s"]) <= 30
    assert keys["north"]["errors by class"] == "upstream_rate_limited 1"
    assert keys["east"]["requests used/left"] == "no limit"
    assert int(keys["east"]["calls"]) > 0
    assert float(keys["east"]["p50 ms"]) <= float(keys["east"]["p95 ms"])
    operations = table_rows(result.stdout, "Operations (", OPERATION_COLUMNS)
    assert {"generation", "llm_call", "llm_call:east", "stage:plan"} <= set(operations)
    assert operations["generation"]["1m calls"] == "1"
    assert operations["generation"]["15m calls"] == "1"
    assert operations["generation"]["total"] == "1"
    assert operations["llm_call"]["15m errors"] == "2"
    errors = table_rows(result.stdout, "Errors by class (", ERROR_COLUMNS)
    assert sorted(errors) == ["upstream_auth_failed", "upstream_rate_limited"]
    assert errors["upstream_auth_failed"]["15m failed"] == "1"
    assert errors["upstream_auth_failed"]["1m failed"] == "1"
    assert errors["upstream_auth_failed"]["15m by key"] == "west 1"
    assert errors["upstream_rate_limited"]["15m by key"] == "north 1"
    attempts = int(operations["llm_call"]["15m calls"])
    assert errors["upstream_rate_limited"]["15m share"] == f"{100 / attempts:.1f}%"
    assert f"{attempts} attempts in the last 15 minutes, 2 failed." in one_line(result.stdout)


def test_errors_table_empty_without_failures(cli: Cli, app_server: AppServer) -> None:
    generated = httpx.post(app_server.base_url + GENERATE_PATH, json=CLIENT_BODY, timeout=30.0)

    result = cli.run("stats", "--server", app_server.base_url)

    assert generated.status_code == 200
    assert result.exit_code == 0, result.stderr
    assert table_rows(result.stdout, "Errors by class (", ERROR_COLUMNS) == {}
    llm_calls = generated.json()["metadata"]["llm_calls"]
    assert f"{llm_calls} attempts in the last 15 minutes, none failed." in one_line(result.stdout)


def test_stats_without_service_names_the_url(cli: Cli) -> None:
    result = cli.run("stats", "--server", "http://127.0.0.1:9")

    assert result.exit_code == 1
    message = one_line(result.stderr)
    assert message.startswith("error [service_unreachable]: ")
    assert "No Microtopic service responds at http://127.0.0.1:9" in message
    assert "`microtopic serve`" in message
    assert result.stdout == ""


def test_server_credentials_are_not_printed(cli: Cli) -> None:
    result = cli.run("stats", "--server", "http://reader:server-password@127.0.0.1:9")

    assert result.exit_code == 1
    message = one_line(result.stderr)
    assert "No Microtopic service responds at http://127.0.0.1:9 " in message
    assert "server-password" not in message
    assert "reader" not in message


def test_stats_server_defaults_to_local_service(cli: Cli) -> None:
    result = cli.run("stats", "--help")

    assert result.exit_code == 0
    assert "http://127.0.0.1:8001" in result.stdout


def test_service_error_keeps_its_code(cli: Cli, app_server: AppServer) -> None:
    result = cli.run("stats", "--server", f"{app_server.base_url}/no-such-prefix")

    assert result.exit_code == 1
    message = one_line(result.stderr)
    assert message.startswith("error [not_found]: ")
    assert "returned HTTP 404: No route matches GET" in message


def test_other_server_is_unexpected_response(cli: Cli, simulator: SimulatorServer) -> None:
    result = cli.run("stats", "--server", simulator.base_url)

    assert result.exit_code == 1
    message = one_line(result.stderr)
    assert message.startswith("error [unexpected_response]: ")
    assert "returned HTTP 404 without a Microtopic error" in message


def test_piped_stats_keep_full_headers(cli: Cli, app_server: AppServer) -> None:
    result = cli.run("stats", "--server", app_server.base_url, env=NARROW_ENV)

    assert result.exit_code == 0, result.stderr
    lines = table_lines(result.stdout)
    assert list(OPERATION_COLUMNS) in lines
    assert list(KEY_COLUMNS) in lines
    assert list(ERROR_COLUMNS) in lines
    assert sorted(table_rows(result.stdout, "Keys (", KEY_COLUMNS)) == sorted(KEY_NAMES)
