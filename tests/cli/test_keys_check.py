"""`microtopic keys check`, from this process and through a running service."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from microtopic.config import GatewayConfig, KeyConfig, ProviderKind, Settings
from microtopic.simulator import SimulatorServer
from tests.api.support import CHECK_PATH, CLIENT_BODY, GENERATE_PATH, STATS_PATH
from tests.app_server import AppServer
from tests.cli.support import API_VERSION, DEPLOYMENT, KEY_NAMES, Cli

COLUMNS = ("name", "check", "state", "latency ms", "error", "reason")


def check_rows(output: str) -> dict[str, dict[str, str]]:
    """Return the cells of each key's row in the check table, by column name."""
    rows = {}
    for line in output.splitlines():
        cells = [cell.strip() for cell in re.split(r"[│┃|]", line)[1:-1]]
        if cells and cells[0] in KEY_NAMES:
            rows[cells[0]] = dict(zip(COLUMNS, cells, strict=True))
    return rows


def set_fault(simulator: SimulatorServer, key_name: str, kind: str) -> None:
    response = httpx.put(
        f"{simulator.base_url}/_simulator/keys/{key_name}/fault", json={"kind": kind}
    )
    response.raise_for_status()


@pytest.fixture
def app_server(
    simulator: SimulatorServer, key_secrets: dict[str, str], tmp_path: Path
) -> Iterator[AppServer]:
    """The service with an Azure key per simulator key, its periodic checks off."""
    keys = [
        KeyConfig(
            name=name,
            provider=ProviderKind.AZURE,
            endpoint=simulator.azure_endpoint,
            deployment=DEPLOYMENT,
            api_version=API_VERSION,
            secret=secret,
        )
        for name, secret in key_secrets.items()
    ]
    settings = Settings(
        keys=keys,
        gateway=GatewayConfig(health_check_interval_s=0),
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'served.db'}",
    )
    with AppServer(settings) as server:
        yield server


def test_check_passes_every_key(cli: Cli, config_file: Path) -> None:
    result = cli.run("keys", "check", "--config", str(config_file))

    assert result.exit_code == 0, result.stderr
    assert "from this machine" in result.stdout
    rows = check_rows(result.stdout)
    assert sorted(rows) == sorted(KEY_NAMES)
    for row in rows.values():
        assert row["check"] == "ok"
        assert row["state"] == "active"
        assert int(row["latency ms"]) >= 0
        assert row["error"] == "-"


def test_check_shows_revoked_key_failed(
    cli: Cli, config_file: Path, simulator: SimulatorServer, key_secrets: dict[str, str]
) -> None:
    set_fault(simulator, "west", "revoked")

    result = cli.run("keys", "check", "--config", str(config_file))

    assert result.exit_code == 1
    rows = check_rows(result.stdout)
    assert rows["west"]["check"] == "failed"
    assert rows["west"]["error"] == "upstream_auth_failed"
    assert rows["west"]["state"] == "disabled"
    assert rows["east"]["check"] == "ok"
    assert rows["north"]["check"] == "ok"
    for secret in key_secrets.values():
        assert secret not in result.output


def test_check_reads_group_options(cli: Cli, config_file: Path) -> None:
    result = cli.run("keys", "--config", str(config_file), "check")

    assert result.exit_code == 0, result.stderr
    assert sorted(check_rows(result.stdout)) == sorted(KEY_NAMES)


def test_server_check_restores_disabled_key(
    cli: Cli, simulator: SimulatorServer, app_server: AppServer
) -> None:
    set_fault(simulator, "west", "revoked")
    for number in range(3):
        # A topic of its own each time, so that the content cache never returns a hit.
        body = {**CLIENT_BODY, "topic_name": f"Algebra {number}"}
        httpx.post(app_server.base_url + GENERATE_PATH, json=body, timeout=30.0)
    revoked = cli.run("keys", "check", "--server", app_server.base_url)
    set_fault(simulator, "west", "none")

    result = cli.run("keys", "check", "--server", app_server.base_url)

    assert revoked.exit_code == 1
    assert check_rows(revoked.stdout)["west"]["state"] == "disabled"
    assert result.exit_code == 0, result.stderr
    assert f"on {app_server.base_url}" in result.stdout
    west = check_rows(result.stdout)["west"]
    assert west["check"] == "ok"
    assert west["state"] == "active"
    stats = httpx.get(app_server.base_url + STATS_PATH).json()
    assert {key["name"]: key["is_active"] for key in stats["keys"]}["west"] is True


def test_server_check_unreachable_exits_1(cli: Cli) -> None:
    result = cli.run("keys", "check", "--server", "http://127.0.0.1:9")

    assert result.exit_code == 1
    message = " ".join(result.stderr.split())
    assert message.startswith("error [service_unreachable]: ")
    assert "Start one with `microtopic serve`" in message


def test_keys_table_shows_live_state(
    cli: Cli, config_file: Path, simulator: SimulatorServer, app_server: AppServer
) -> None:
    set_fault(simulator, "north", "revoked")
    httpx.post(app_server.base_url + CHECK_PATH, timeout=30.0)

    result = cli.run("keys", "--config", str(config_file), "--server", app_server.base_url)

    assert result.exit_code == 0, result.stderr
    states = {}
    for line in result.stdout.splitlines():
        cells = [cell.strip() for cell in re.split(r"[│┃|]", line)[1:-1]]
        if cells and cells[0] in KEY_NAMES:
            states[cells[0]] = cells[-1]
    assert states == {"east": "active", "west": "active", "north": "disabled"}
