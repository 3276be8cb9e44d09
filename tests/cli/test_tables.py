"""The key table of `microtopic keys`: masked secrets, and usage counts from the database."""

from __future__ import annotations

import re
from pathlib import Path

from microtopic.simulator import SimulatorServer
from tests.cli.support import KEY_NAMES, Cli

COLUMNS = ("name", "provider", "deployment", "endpoint", "secret", "active", "usage", "errors")


def table_rows(output: str) -> dict[str, dict[str, str]]:
    """Return the cells of each key's row in a Rich table, by column name."""
    rows = {}
    for line in output.splitlines():
        cells = [cell.strip() for cell in re.split(r"[│┃|]", line)[1:-1]]
        if cells and cells[0] in KEY_NAMES:
            rows[cells[0]] = dict(zip(COLUMNS, cells, strict=False))
    return rows


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
