"""Give every HTTP request an id: the client's `X-Request-ID` when valid, else a new one."""

from __future__ import annotations

import re
import time
import uuid

from starlette.datastructures import MutableHeaders
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from microtopic.log_context import current_request_id
from microtopic.storage.models import ID_LENGTH

HEADER = "X-Request-ID"
# At most as long as the request id column, so that a kept id can always be stored. At
# least one letter or digit, because an id of dots alone is a path segment that URLs drop.
_VALID = re.compile(rf"^(?=.*[A-Za-z0-9])[A-Za-z0-9._\-]{{1,{ID_LENGTH}}}$")


def request_id_of(request: Request) -> str:
    """Return the id the middleware gave this request."""
    return str(request.state.request_id)


def received_at_of(request: Request) -> float:
    """Return when the middleware first saw this request, on the monotonic clock."""
    return float(request.state.received_at)


class RequestIdMiddleware:
    """Stores the id in `request.state.request_id` and returns it as a response header.

    The id is also the logging context's request id while the request runs. The
    moment the request arrived goes to `request.state.received_at`, for its trace.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        received_at = time.monotonic()
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = Request(scope).headers.get(HEADER, "")
        # An id that is too long or has odd characters is replaced, not echoed into logs.
        request_id = incoming if _VALID.match(incoming) else uuid.uuid4().hex
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        state["received_at"] = received_at

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message)[HEADER] = request_id
            await send(message)

        token = current_request_id.set(request_id)
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            current_request_id.reset(token)
