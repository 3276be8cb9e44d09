"""Routes under /api/v1/microtopic-content, plus /healthz."""

from __future__ import annotations

import os
import platform
import resource
import sys
import time
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Request

from microtopic.api.body import require_json_body
from microtopic.api.disconnect import cancel_on_disconnect
from microtopic.api.request_id import received_at_of, request_id_of
from microtopic.api.schemas import (
    CapacityOut,
    DebugDashboardResponse,
    ErrorsOut,
    GenerationResponse,
    HealthCheckOut,
    KeyCheckOut,
    KeyCheckResponse,
    KeyHealthOut,
    KeyOut,
    OperationOut,
    ServiceStatsResponse,
    SystemOut,
)
from microtopic.domain import GenerationRequest
from microtopic.keypool import KeyState, PooledKey
from microtopic.runtime import Runtime

PREFIX = "/api/v1/microtopic-content"


def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]

router = APIRouter(prefix=PREFIX)
health_router = APIRouter()


@health_router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.post(
    "/generate-async",
    response_model=GenerationResponse,
    dependencies=[Depends(require_json_body)],
)
async def generate(
    body: GenerationRequest, request: Request, runtime: RuntimeDep
) -> GenerationResponse:
    """Generate a topic's microtopic lessons and return them with the run's metadata."""
    work = runtime.service.generate(
        body, request_id=request_id_of(request), received_at=received_at_of(request)
    )
    outcome = await cancel_on_disconnect(request, work)
    return GenerationResponse.from_outcome(outcome)


@router.get("/service-stats", response_model=ServiceStatsResponse)
async def service_stats(runtime: RuntimeDep) -> ServiceStatsResponse:
    """Return the gateway's capacity and queue, every key's state, quota and counters, the
    attempts' errors by class over the last 1 and 15 minutes, and each operation's timings."""
    await runtime.gateway.pool.sync()
    capacity = runtime.gateway.capacity()
    now = time.monotonic()
    return ServiceStatsResponse(
        capacity=CapacityOut(**vars(capacity)),
        keys=[_key_out(key, now, runtime) for key in runtime.gateway.pool.keys],
        performance_stats=[OperationOut.from_stats(op) for op in runtime.stats.snapshot()],
        errors=ErrorsOut.from_windows(runtime.error_stats.total()),
    )


@router.post("/keys/check", response_model=KeyCheckResponse)
async def check_keys(runtime: RuntimeDep) -> KeyCheckResponse:
    """Check every key now with one small call each, and return the outcomes and states.

    A passing check brings a disabled, exhausted or open-circuited key back into rotation.
    """
    checks = await runtime.health.check_all()
    now = time.monotonic()
    return KeyCheckResponse(
        keys=[KeyCheckOut.from_check(key, record, now) for key, record in checks]
    )


@router.post("/keys/{name}/enable", response_model=KeyOut)
async def enable_key(name: str, runtime: RuntimeDep) -> KeyOut:
    """Put a key back into rotation, clearing its cooldown, exhaustion and breaker."""
    key = runtime.gateway.pool.enable(name)
    return _key_out(key, time.monotonic(), runtime)


@router.get("/debug/dashboard", response_model=DebugDashboardResponse)
async def debug_dashboard(request: Request, runtime: RuntimeDep) -> DebugDashboardResponse:
    """Return capacity, keys, per-operation timings, errors by class, key health and system
    info as JSON."""
    await runtime.gateway.pool.sync()
    keys = runtime.gateway.pool.keys
    now = time.monotonic()
    return DebugDashboardResponse(
        timestamp=datetime.now(UTC),
        service_stats=CapacityOut(**vars(runtime.gateway.capacity())),
        key_stats=[_key_out(key, now, runtime) for key in keys],
        performance_stats=[OperationOut.from_stats(op) for op in runtime.stats.snapshot()],
        errors=ErrorsOut.from_windows(runtime.error_stats.total()),
        key_health=[_health(key, now) for key in keys],
        system=_system(request.app.state.started_at),
    )


def _key_out(key: PooledKey, now: float, runtime: Runtime) -> KeyOut:
    return KeyOut.from_key(key, now, runtime.error_stats.for_key(key.name))


def _health(key: PooledKey, now: float) -> KeyHealthOut:
    error_rate = key.error_count / key.usage_count if key.usage_count else 0.0
    state = key.state(now)
    return KeyHealthOut(
        name=key.name,
        status="healthy" if state is KeyState.ACTIVE else state.value,
        error_rate=round(error_rate, 4),
        last_error=key.last_error,
        last_health_check=None if key.health is None else HealthCheckOut.from_record(key.health),
    )


def _system(started_at: float) -> SystemOut:
    return SystemOut(
        python_version=sys.version.split()[0],
        platform=platform.platform(),
        pid=os.getpid(),
        memory_rss_mb=round(_rss_mb(), 1),
        uptime_s=round(time.monotonic() - started_at, 1),
    )


def _rss_mb() -> float:
    # Current resident size from /proc on Linux; elsewhere the peak from getrusage (KiB on Linux).
    try:
        with open("/proc/self/statm", encoding="ascii") as statm:
            pages = int(statm.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
