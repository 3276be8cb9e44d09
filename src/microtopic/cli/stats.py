"""`microtopic stats`: a running service's capacity, timings, keys and errors, as tables."""

from __future__ import annotations

from rich.markup import escape
from rich.table import Table

from microtopic.api.schemas import (
    ErrorsOut,
    KeyOut,
    OperationOut,
    ServiceStatsResponse,
    WindowOut,
)
from microtopic.cli.remote import call_service

STATS_PATH = "/api/v1/microtopic-content/service-stats"

OPERATION_COLUMNS = (
    "operation",
    "1m calls",
    "1m p50 ms",
    "1m p95 ms",
    "15m calls",
    "15m errors",
    "15m p50 ms",
    "15m p95 ms",
    "15m p99 ms",
    "15m max ms",
    "total",
)
KEY_COLUMNS = (
    "name",
    "state",
    "cooldown s",
    "requests used/left",
    "tokens used/left",
    "in flight",
    "calls",
    "errors",
    "errors by class",
    "p50 ms",
    "p95 ms",
)
ERROR_COLUMNS = ("error", "15m failed", "15m share", "1m failed", "15m by key")


async def fetch_stats(server: str) -> ServiceStatsResponse:
    """Return the stats of the service at `server`."""
    return await call_service("GET", server, STATS_PATH, ServiceStatsResponse, timeout_s=10.0)


def stats_tables(stats: ServiceStatsResponse, server: str) -> list[Table]:
    """Return the capacity, operations, keys and errors tables of `stats`, read from `server`.

    A service older than the `errors` field gets no errors table.
    """
    tables = [
        capacity_table(stats, server),
        operations_table(stats.performance_stats),
        keys_table(stats.keys, {op.operation: op for op in stats.performance_stats}),
    ]
    if stats.errors is not None:
        tables.append(errors_table(stats.errors, stats.keys))
    return tables


def capacity_table(stats: ServiceStatsResponse, server: str) -> Table:
    capacity = stats.capacity
    table = Table(title=escape(f"Service at {server}"), show_header=False)
    table.add_column("figure")
    table.add_column("value", justify="right")
    rows = (
        (
            "LLM calls in flight",
            f"{capacity.active_requests} of {capacity.max_concurrent_requests}",
        ),
        ("calls waiting for a key", f"{capacity.queued_requests} of {capacity.max_queue_size}"),
        ("calls since start", str(capacity.total_requests)),
        ("failed calls since start", str(capacity.failed_requests)),
    )
    for figure, value in rows:
        table.add_row(figure, value)
    return table


def operations_table(operations: list[OperationOut]) -> Table:
    """Return one row per operation: the last minute, the last 15 minutes, and the total."""
    table = Table(title="Operations (percentiles within about 2%)")
    for column in OPERATION_COLUMNS:
        table.add_column(column, justify="left" if column == "operation" else "right")
    for op in operations:
        short, long = op.last_1m, op.last_15m
        table.add_row(
            escape(op.operation),
            str(short.count),
            _ms(short, short.p50_ms),
            _ms(short, short.p95_ms),
            str(long.count),
            str(long.error_count),
            _ms(long, long.p50_ms),
            _ms(long, long.p95_ms),
            _ms(long, long.p99_ms),
            _ms(long, long.max_ms),
            str(op.count),
        )
    return table


def keys_table(keys: list[KeyOut], operations: dict[str, OperationOut]) -> Table:
    """Return one row per key, with the latencies of its LLM calls in the last 15 min."""
    table = Table(title="Keys (latency over the last 15 minutes)")
    for column in KEY_COLUMNS:
        table.add_column(column, justify="left" if column in ("name", "state") else "right")
    for key in keys:
        calls = operations.get(f"llm_call:{key.name}")
        window = None if calls is None else calls.last_15m
        table.add_row(
            escape(key.name),
            escape(key.state),
            f"{key.cooldown_remaining_s:.1f}" if key.cooldown_remaining_s else "-",
            _used_and_left(key.quota.requests_used, key.quota.requests_remaining),
            _used_and_left(key.quota.tokens_used, key.quota.tokens_remaining),
            _in_flight(key),
            str(key.usage_count),
            str(key.error_count),
            escape(_errors_by_class(key.errors_by_class)),
            "-" if window is None else _ms(window, window.p50_ms),
            "-" if window is None else _ms(window, window.p95_ms),
        )
    return table


def errors_table(errors: ErrorsOut, keys: list[KeyOut]) -> Table:
    """Return one row per error class of the last 15 minutes, the most frequent first."""
    long, short = errors.last_15m, errors.last_1m
    failed = str(long.failed) if long.failed else "none"
    table = Table(
        title="Errors by class (last 15 minutes)",
        caption=f"{long.attempts} attempts in the last 15 minutes, {failed} failed.",
    )
    for column in ERROR_COLUMNS:
        table.add_column(column, justify="left" if column in ("error", "15m by key") else "right")
    classes = sorted(long.by_class.items(), key=lambda item: (-item[1].count, item[0]))
    for code, of_class in classes:
        recent = short.by_class.get(code)
        table.add_row(
            code,
            str(of_class.count),
            f"{100 * of_class.rate:.1f}%",
            "0" if recent is None else str(recent.count),
            _keys_failed_with(code, keys),
        )
    return table


def _keys_failed_with(code: str, keys: list[KeyOut]) -> str:
    counts = [(key.name, key.errors_last_15m.get(code, 0)) for key in keys]
    return ", ".join(f"{name} {count}" for name, count in counts if count) or "-"


def _ms(window: WindowOut, value_ms: float) -> str:
    return "-" if window.count == 0 else f"{value_ms:.0f}"


def _used_and_left(used: int | None, left: int | None) -> str:
    # A key without this limit has no window: nothing is counted, nothing runs out.
    if used is None or left is None:
        return "no limit"
    return f"{used} / {left}"


def _in_flight(key: KeyOut) -> str:
    if key.max_concurrency is None:
        return str(key.active_calls)
    return f"{key.active_calls} of {key.max_concurrency}"


def _errors_by_class(errors: dict[str, int]) -> str:
    if not errors:
        return "-"
    return ", ".join(f"{code} {count}" for code, count in sorted(errors.items()))
