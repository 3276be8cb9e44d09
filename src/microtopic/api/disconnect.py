"""Stop a generation or a forwarded call whose client has gone away.

uvicorn does not cancel a handler when its client disconnects, so a long
generation, or a forwarded call waiting for a key, would go on spending quota
after no one waits for it. The route runs
the work as a task and checks the connection every `POLL_S` seconds. On a
disconnect it cancels the task, which gives back the request's slots and queue
places, cancels its upstream calls and stores the request as cancelled.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any, TypeVar

from starlette.requests import Request

from microtopic.api.request_id import request_id_of
from microtopic.errors import ClientDisconnectedError

logger = logging.getLogger(__name__)

T = TypeVar("T")

POLL_S = 0.25


async def cancel_on_disconnect(request: Request, work: Coroutine[Any, Any, T]) -> T:
    """Return the result of `work`, or cancel it and raise if the client disconnects first."""
    task = asyncio.ensure_future(work)
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=POLL_S)
            if done:
                return task.result()
            if await request.is_disconnected():
                break
    except BaseException:
        task.cancel()
        raise

    request_id = request_id_of(request)
    logger.info("request %s: the client disconnected; cancelling its work", request_id)
    task.cancel()
    await asyncio.wait({task})
    raise ClientDisconnectedError(
        "The client disconnected before its answer was ready, so its work was cancelled."
    )
