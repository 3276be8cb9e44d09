"""`GET /metrics` in Prometheus text format, and the middleware that times every request."""

from __future__ import annotations

import time

from fastapi import APIRouter
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from microtopic.api.routes import RuntimeDep
from microtopic.observability.metrics import UNMATCHED_ROUTE

router = APIRouter()


@router.get("/metrics", include_in_schema=False)
async def metrics(runtime: RuntimeDep) -> Response:
    """Return every metric of the service, reading the key gauges from the pool now."""
    await runtime.gateway.pool.sync()
    # On the event loop, not in a thread, so the pool is read between its updates.
    body = generate_latest(runtime.metrics.registry)
    return Response(body, media_type=CONTENT_TYPE_LATEST)


class MetricsMiddleware:
    """Records each HTTP request's duration by method, route template and status class.

    It also counts the error code that the error handlers leave in
    `request.state.error_code`. An exception that escapes the app is recorded as a
    500 with the code `internal_error`, which is what the client receives.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status: int | None = None

        async def send_with_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_with_status)
        except BaseException:
            if status is None:
                status = 500
                scope.setdefault("state", {}).setdefault("error_code", "internal_error")
            raise
        finally:
            _record(scope, status or 500, time.perf_counter() - started)


def _record(scope: Scope, status: int, duration_s: float) -> None:
    runtime = getattr(scope["app"].state, "runtime", None)
    if runtime is None:  # the lifespan has not started the runtime
        return
    route = scope.get("route")
    template = getattr(route, "path", None) or UNMATCHED_ROUTE
    runtime.metrics.http_request(scope["method"], template, status, duration_s)
    error_code = scope.get("state", {}).get("error_code")
    if error_code is not None:
        runtime.metrics.error(error_code)
