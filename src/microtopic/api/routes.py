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

from microtopic.api.request_id import request_id_of
from microtopic.api.schemas import (
    CapacityOut,
    DebugDashboardResponse,
    GenerationResponse,
    KeyHealthOut,
    KeyOut,
    OperationOut,
    ServiceStatsResponse,
    SystemOut,
)
from microtopic.domain import GenerationRequest
from microtopic.keypool import PooledKey
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


@router.post("/generate-async", response_model=GenerationResponse)
async def generate(
    body: GenerationRequest, request: Request, runtime: RuntimeDep
) -> GenerationResponse:
    """Generate a topic's microtopic lessons and return them with the run's metadata."""
    outcome = await runtime.service.generate(body, request_id=request_id_of(request))
    return GenerationResponse.from_outcome(outcome)


@router.get("/service-stats", response_model=ServiceStatsResponse)
async def service_stats(runtime: RuntimeDep) -> ServiceStatsResponse:
    """Return the gateway's capacity and every key's counters."""
    capacity = runtime.gateway.capacity()
    return ServiceStatsResponse(
        capacity=CapacityOut(**vars(capacity)),
        keys=[KeyOut.from_key(key) for key in runtime.gateway.pool.keys],
    )


@router.post("/keys/{name}/enable", response_model=KeyOut)
async def enable_key(name: str, runtime: RuntimeDep) -> KeyOut:
    """Put a key disabled after an authentication failure back into rotation."""
    return KeyOut.from_key(runtime.gateway.pool.enable(name))


@router.get("/debug/dashboard", response_model=DebugDashboardResponse)
async def debug_dashboard(request: Request, runtime: RuntimeDep) -> DebugDashboardResponse:
    """Return capacity, keys, per-operation timings, key health and system info as JSON."""
    keys = runtime.gateway.pool.keys
    return DebugDashboardResponse(
        timestamp=datetime.now(UTC),
        service_stats=CapacityOut(**vars(runtime.gateway.capacity())),
        key_stats=[KeyOut.from_key(key) for key in keys],
        performance_stats=[OperationOut(**vars(op)) for op in runtime.stats.snapshot()],
        key_health=[_health(key) for key in keys],
        system=_system(request.app.state.started_at),
    )


def _health(key: PooledKey) -> KeyHealthOut:
    error_rate = key.error_count / key.usage_count if key.usage_count else 0.0
    if not key.is_active:
        status = "disabled"
    elif key.error_count and key.last_error:
        status = "degraded"
    else:
        status = "healthy"
    return KeyHealthOut(
        name=key.name, status=status, error_rate=round(error_rate, 4), last_error=key.last_error
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
