"""The live dashboard: its page at `/dashboard`, and the JSON routes only it needs.

The page is plain HTML, CSS and JavaScript shipped in `api/static/`, with no
build step and nothing fetched from other hosts. It polls the service's JSON
routes: `debug/dashboard` for keys and capacity, `stats/timeseries` for the
charts, `requests` and `requests/{id}/trace` for recent requests, and `jobs`.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from importlib import resources
from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import Response
from pydantic import BaseModel

from microtopic.api.routes import PREFIX, RuntimeDep
from microtopic.errors import NotFoundError
from microtopic.observability import SlotStats, Timeline
from microtopic.observability.performance import Window

# The page's other files, by the name in their URL, and their media types.
ASSETS = {
    "dashboard.css": "text/css; charset=utf-8",
    "dashboard.js": "text/javascript; charset=utf-8",
}
# Everything the page loads comes from this service, so nothing else may run in it.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
PAGE_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-cache",
}
DEFAULT_OPERATIONS = ("generation", "llm_call")
MAX_OPERATIONS = 20

page_router = APIRouter()
router = APIRouter(prefix=PREFIX)


class SlotOut(BaseModel):
    """One time slot of an operation: its start, its calls and their latency, in ms."""

    start: datetime
    count: int
    error_count: int
    mean_ms: float
    p50_ms: float
    p95_ms: float


class SeriesOut(BaseModel):
    operation: str
    points: list[SlotOut]


class TimeseriesResponse(BaseModel):
    """Operations slot by slot over `window`: 5-second slots for 1m, 1-minute for 15m.

    Slots run oldest first; the last one is the current slot, still filling.
    Percentiles are within about 2%.
    """

    success: bool = True
    window: str
    window_s: float
    slot_s: float
    generated_at: datetime
    series: list[SeriesOut]


class RunningJobOut(BaseModel):
    """A background job that has not finished, with how many of its items have."""

    id: str
    kind: str
    status: str
    created_at: datetime
    total: int
    finished: int
    failed: int


class RunningJobsResponse(BaseModel):
    success: bool = True
    jobs: list[RunningJobOut]


@page_router.get("/dashboard", include_in_schema=False)
async def dashboard_page() -> Response:
    """Return the dashboard's HTML page."""
    page = _asset("dashboard.html")
    return Response(page, media_type="text/html; charset=utf-8", headers=PAGE_HEADERS)


@page_router.get("/dashboard/{name}", include_in_schema=False)
async def dashboard_asset(name: str) -> Response:
    """Return the dashboard's stylesheet or script."""
    media_type = ASSETS.get(name)
    if media_type is None:
        raise NotFoundError(f"The dashboard has no file {name[:100]!r}; open /dashboard.")
    return Response(_asset(name), media_type=media_type, headers=PAGE_HEADERS)


@router.get("/stats/timeseries", response_model=TimeseriesResponse)
async def timeseries(
    runtime: RuntimeDep,
    window: Annotated[Window, Query(description="1m (5-second slots) or 15m (1-minute).")] = "15m",
    operation: Annotated[
        list[str] | None,
        Query(
            max_length=MAX_OPERATIONS,
            description="Operations to return, such as `llm_call:east`; repeat it. "
            "Default: generation and llm_call.",
        ),
    ] = None,
) -> TimeseriesResponse:
    """Return the operations' counts and latencies slot by slot, for the dashboard's charts."""
    names = operation or list(DEFAULT_OPERATIONS)
    timelines = [runtime.stats.timeline(name, window) for name in names]
    generated_at = datetime.now(UTC)
    first = timelines[0]
    return TimeseriesResponse(
        window=window,
        window_s=first.window_s,
        slot_s=first.slot_s,
        generated_at=generated_at,
        series=[_series(timeline, generated_at) for timeline in timelines],
    )


@router.get("/jobs", response_model=RunningJobsResponse)
async def running_jobs(runtime: RuntimeDep) -> RunningJobsResponse:
    """Return the 20 most recent background jobs that have not finished, for the dashboard."""
    jobs = await runtime.job_store.unfinished_jobs()
    return RunningJobsResponse(
        jobs=[
            RunningJobOut(
                id=job.id,
                kind=str(job.kind),
                status="running" if job.progress.running else "queued",
                created_at=job.created_at,
                total=job.progress.total,
                finished=job.progress.finished,
                failed=job.progress.failed,
            )
            for job in jobs
        ]
    )


def _series(timeline: Timeline, generated_at: datetime) -> SeriesOut:
    # The stats' clock is monotonic; each slot's start is placed before `generated_at`.
    def wall(slot: SlotStats) -> datetime:
        return generated_at - timedelta(seconds=timeline.now_s - slot.start_s)

    return SeriesOut(
        operation=timeline.operation,
        points=[
            SlotOut(
                start=wall(slot),
                count=slot.count,
                error_count=slot.error_count,
                mean_ms=round(slot.mean_ms, 3),
                p50_ms=round(slot.p50_ms, 3),
                p95_ms=round(slot.p95_ms, 3),
            )
            for slot in timeline.slots
        ],
    )


def _asset(name: str) -> bytes:
    return (resources.files("microtopic.api") / "static" / name).read_bytes()
