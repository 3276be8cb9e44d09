"""The FastAPI app factory; shared resources live in the lifespan, not in globals."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from microtopic import __version__
from microtopic.api.body import MAX_BODY_BYTES, MAX_PASSTHROUGH_BODY_BYTES, BodySizeLimitMiddleware
from microtopic.api.dashboard import page_router as dashboard_page_router
from microtopic.api.dashboard import router as dashboard_router
from microtopic.api.errors import install_error_handlers
from microtopic.api.jobs import router as jobs_router
from microtopic.api.metrics import MetricsMiddleware
from microtopic.api.metrics import router as metrics_router
from microtopic.api.passthrough import PASSTHROUGH_PATH_PREFIXES
from microtopic.api.passthrough import router as passthrough_router
from microtopic.api.request_id import RequestIdMiddleware
from microtopic.api.routes import health_router, router
from microtopic.api.traces import router as traces_router
from microtopic.config import Settings
from microtopic.runtime import Runtime


def create_app(settings: Settings) -> FastAPI:
    """Build the app; the runtime (database, key pool, gateway) starts with the server."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        runtime = await Runtime.start(settings, run_jobs=True)
        app.state.runtime = runtime
        app.state.started_at = time.monotonic()
        try:
            yield
        finally:
            await runtime.aclose()

    app = FastAPI(title="Microtopic", version=__version__, lifespan=lifespan)
    # Added first, so it runs inside the request id middleware and its 413 carries the id.
    app.add_middleware(
        BodySizeLimitMiddleware,
        max_bytes=MAX_BODY_BYTES,
        max_bytes_by_prefix={
            prefix: MAX_PASSTHROUGH_BODY_BYTES for prefix in PASSTHROUGH_PATH_PREFIXES
        },
    )
    app.add_middleware(RequestIdMiddleware)
    # Added last, so it runs outermost and times everything the client waits for.
    app.add_middleware(MetricsMiddleware)
    install_error_handlers(app)
    app.include_router(health_router)
    app.include_router(router)
    app.include_router(jobs_router)
    app.include_router(passthrough_router)
    app.include_router(metrics_router)
    app.include_router(traces_router)
    app.include_router(dashboard_router)
    app.include_router(dashboard_page_router)
    return app
