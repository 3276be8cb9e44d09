"""`microtopic keys check`: a health check of every key, here or on a running service."""

from __future__ import annotations

import time

from rich.markup import escape
from rich.table import Table

from microtopic.api.schemas import KeyCheckOut, KeyCheckResponse
from microtopic.cli.remote import call_service
from microtopic.config import Settings
from microtopic.keypool import HealthMonitor
from microtopic.providers.factory import build_pool

CHECK_PATH = "/api/v1/microtopic-content/keys/check"


async def check_keys(settings: Settings, server: str | None) -> list[KeyCheckOut]:
    """Check every key: on the service at `server`, or else from this process."""
    if server:
        return await _check_on_server(server)
    return await _check_here(settings)


def check_table(checks: list[KeyCheckOut], source: str) -> Table:
    """Return the table of check outcomes, one row per key, with the text escaped for Rich."""
    table = Table(title=escape(f"Key health checks ({source})"))
    for column in ("name", "check", "state", "latency ms", "error", "reason"):
        table.add_column(column, justify="right" if column == "latency ms" else "left")
    for key in checks:
        check = key.check
        latency = "-" if check.latency_ms is None else f"{check.latency_ms:.0f}"
        table.add_row(
            escape(key.name),
            escape(check.status),
            escape(key.state),
            latency,
            escape(check.error_code or "-"),
            escape(check.reason or "-"),
        )
    return table


async def _check_here(settings: Settings) -> list[KeyCheckOut]:
    pool = build_pool(settings)
    try:
        checks = await HealthMonitor(pool).check_all()
    finally:
        for key in pool.keys:
            await key.provider.aclose()
    now = time.monotonic()
    return [KeyCheckOut.from_check(key, record, now) for key, record in checks]


async def _check_on_server(server: str) -> list[KeyCheckOut]:
    # The service checks every key concurrently, each within its own timeout.
    checks = await call_service("POST", server, CHECK_PATH, KeyCheckResponse, timeout_s=120.0)
    return checks.keys
