"""The key table of `microtopic keys`: masked secrets, and usage counts from the database."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from microtopic.config import load_settings
from microtopic.simulator import SimulatorServer
from tests.app_server import AppServer
from tests.cli.support import KEY_NAMES, NARROW_ENV, Cli, table_lines

# An ANSI escape sequence that selects a style, such as bold.
ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")

COLUMNS = (
    "name",
    "provider",
    "deployment",
    "endpoint",
    "secret",
    "active",
    "usage",
    "errors",
    "last used",
    "state",
)


def table_rows(output: str) -> dict[str, dict[str, str]]:
    """Return the cells of each row in a Rich table, by column name, keyed by the first cell."""
    rows = {}
    for line in output.splitlines():
        cells = [cell.strip() for cell in re.split(r"[│┃|]", line)[1:-1]]
        if len(cells) == len(COLUMNS) and cells[0] and cells[0] != "name":
            rows[cells[0]] = dict(zip(COLUMNS, cells, strict=True))
    return rows


@pytest.fixture
def app_server(config_file: Path) -> Iterator[AppServer]:
    """The service, serving the config file's keys."""
    with AppServer(load_settings(config_file)) as server:
        yield server


def test_keys_lists_every_key(cli: Cli, config_file: Path, simulator: SimulatorServer) -> None:
    result = cli.run("keys", "--config", str(config_file))

    assert result.exit_code == 0, result.stderr
    rows = table_rows(result.stdout)
    assert sorted(rows) == sorted(KEY_NAMES)
    host = simulator.base_url.removeprefix("http://")
    for row in rows.values():
        assert row["provider"] == "azure"
        assert row["deployment"] == "gpt-4o-mini"
        assert row["endpoint"] == host


def test_keys_prints_brackets_in_cells(cli: Cli, config_file: Path) -> None:
    text = config_file.read_text(encoding="utf-8")
    config_file.write_text(text.replace("gpt-4o-mini", "gpt-[bold]mini"), encoding="utf-8")

    result = cli.run("keys", "--config", str(config_file))

    assert result.exit_code == 0, result.stderr
    rows = table_rows(result.stdout)
    assert {row["deployment"] for row in rows.values()} == {"gpt-[bold]mini"}


def test_keys_masks_secrets(cli: Cli, config_file: Path, key_secrets: dict[str, str]) -> None:
    result = cli.run("keys", "--config", str(config_file))

    rows = table_rows(result.stdout)
    for name, secret in key_secrets.items():
        assert rows[name]["secret"] == f"****{secret[-4:]}"
        assert secret not in result.output
        assert secret[8:] not in result.output


def test_keys_counts_start_at_zero(cli: Cli, config_file: Path) -> None:
    result = cli.run("keys", "--config", str(config_file))

    assert "counts from stored LLM calls" in result.stdout
    for row in table_rows(result.stdout).values():
        assert row["usage"] == "0"
        assert row["errors"] == "0"


def test_keys_counts_stored_calls(cli: Cli, config_file: Path) -> None:
    generated = cli.run(
        "generate",
        "--subject",
        "Mathematics",
        "--topic",
        "Linear equations",
        "--config",
        str(config_file),
    )

    result = cli.run("keys", "--config", str(config_file))

    assert generated.exit_code == 0, generated.stderr
    assert result.exit_code == 0, result.stderr
    rows = table_rows(result.stdout)
    usage = {name: int(row["usage"]) for name, row in rows.items()}
    assert all(count > 0 for count in usage.values()), usage
    llm_calls = re.search(r"(\d+) LLM calls", generated.stderr)
    assert llm_calls is not None
    assert sum(usage.values()) == int(llm_calls.group(1))
    assert all(row["errors"] == "0" for row in rows.values())


def test_keys_from_server_without_config(
    cli: Cli, app_server: AppServer, key_secrets: dict[str, str], simulator: SimulatorServer
) -> None:
    result = cli.run("keys", "--server", app_server.base_url)

    assert result.exit_code == 0, result.stderr
    assert f"live counts from {app_server.base_url}" in result.stdout
    rows = table_rows(result.stdout)
    assert sorted(rows) == sorted(KEY_NAMES)
    host = simulator.base_url.removeprefix("http://")
    for name, row in rows.items():
        assert row["provider"] == "azure"
        assert row["endpoint"] == host
        assert row["secret"] == f"****{key_secrets[name][-4:]}"
        assert row["active"] == "yes"
        assert row["state"] == "active"


def test_keys_from_server_ignore_local_config(
    cli: Cli, app_server: AppServer, tmp_path: Path
) -> None:
    other = tmp_path / "other.yaml"
    other.write_text(f"database_url: sqlite+aiosqlite:///{tmp_path / 'other.db'}\n")

    result = cli.run("keys", "--server", app_server.base_url, "--config", str(other))

    assert result.exit_code == 0, result.stderr
    assert sorted(table_rows(result.stdout)) == sorted(KEY_NAMES)


def test_keys_from_server_show_live_counts(cli: Cli, app_server: AppServer) -> None:
    response = httpx.post(
        f"{app_server.base_url}/api/v1/microtopic-content/generate-async",
        json={"course_id": "c", "subject_name": "Mathematics", "topic_name": "Slope"},
        timeout=30.0,
    )

    result = cli.run("keys", "--server", app_server.base_url)

    assert response.status_code == 200
    rows = table_rows(result.stdout)
    usage = sum(int(row["usage"]) for row in rows.values())
    assert usage == response.json()["metadata"]["llm_calls"]
    assert all(row["last used"] != "-" for row in rows.values() if row["usage"] != "0")


def test_piped_keys_keep_full_headers(cli: Cli, config_file: Path) -> None:
    result = cli.run("keys", "--config", str(config_file), env=NARROW_ENV)

    assert result.exit_code == 0, result.stderr
    assert list(COLUMNS) in table_lines(result.stdout)
    assert sorted(table_rows(result.stdout)) == sorted(KEY_NAMES)


def test_keys_on_terminal_use_its_width(cli: Cli, config_file: Path) -> None:
    # TTY_COMPATIBLE=1 makes Rich treat stdout as a terminal, whose width is $COLUMNS.
    terminal = {**NARROW_ENV, "TTY_COMPATIBLE": "1"}

    result = cli.run("keys", "--config", str(config_file), env=terminal)

    assert result.exit_code == 0, result.stderr
    lines = ANSI_ESCAPE.sub("", result.stdout).splitlines()
    assert max(len(line) for line in lines) == 80
