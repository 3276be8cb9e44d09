"""Routes of request traces: the recent requests, and the trace of one of them."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from microtopic.api.routes import PREFIX, RuntimeDep
from microtopic.api.trace_schemas import RequestListResponse, RequestSummaryOut, TraceResponse
from microtopic.storage import RequestFilter, RequestKind, RequestStatus
from microtopic.storage.traces import MAX_LISTED

router = APIRouter(prefix=PREFIX)


@router.get("/requests", response_model=RequestListResponse)
async def list_requests(
    runtime: RuntimeDep,
    kind: Annotated[
        RequestKind | None,
        Query(description="Only generations, or only calls forwarded through the passthrough."),
    ] = None,
    status: Annotated[
        RequestStatus | None, Query(description="Only requests with this status.")
    ] = None,
    key: Annotated[
        str | None,
        Query(max_length=64, description="Only requests with an LLM call on this key."),
    ] = None,
    error: Annotated[
        str | None,
        Query(
            max_length=64,
            description="Only requests that failed with this error code, or that have an "
            "LLM call that did, such as `upstream_rate_limited`.",
        ),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LISTED)] = 50,
) -> RequestListResponse:
    """Return the newest requests whose traces are kept, newest first, filtered."""
    selection = RequestFilter(
        since=runtime.pruner.oldest_kept(),
        kind=kind,
        status=status,
        key_name=key,
        error_code=error,
        limit=limit,
    )
    summaries = await runtime.traces.list_requests(selection)
    return RequestListResponse(
        requests=[RequestSummaryOut.from_summary(summary) for summary in summaries]
    )


@router.get("/requests/{request_id}/trace", response_model=TraceResponse)
async def get_trace(request_id: str, runtime: RuntimeDep) -> TraceResponse:
    """Return the request and every span of its trace; 404 when unknown or pruned."""
    trace = await runtime.traces.get_trace(request_id, not_before=runtime.pruner.oldest_kept())
    return TraceResponse.from_trace(trace)
