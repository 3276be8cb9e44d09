"""Rules for request bodies: a size limit for every route, and JSON where a route reads one.

Both raise starlette's `HTTPException`, which `api.errors` turns into the usual
error body (413 `request_too_large`, 415 `unsupported_media_type`).
"""

from __future__ import annotations

from collections.abc import Mapping

from fastapi import Request
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# A generation request takes a few kilobytes at most.
MAX_BODY_BYTES = 1024 * 1024
# A forwarded chat body can carry a long conversation or base64 images. This is our own
# ceiling, not a provider's documented limit.
MAX_PASSTHROUGH_BODY_BYTES = 32 * 1024 * 1024


class RequestBodyTooLargeError(HTTPException):
    """Raised on reading a body larger than `max_bytes`, before the rest of it is read."""

    def __init__(self, max_bytes: int) -> None:
        super().__init__(status_code=413)
        self.max_bytes = max_bytes


class BodySizeLimitMiddleware:
    """Stops reading a request body once it is larger than its route's limit.

    A Content-Length over the limit fails the first read, so no byte of the body is
    read. A chunked body fails as soon as the bytes read pass the limit. A route that
    never reads its body is not affected. `max_bytes_by_prefix` sets other limits for
    paths that start with a prefix.
    """

    def __init__(
        self, app: ASGIApp, *, max_bytes: int, max_bytes_by_prefix: Mapping[str, int] | None = None
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.max_bytes_by_prefix = dict(max_bytes_by_prefix or {})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        max_bytes = self._limit_for(scope["path"])
        declared = _content_length(scope)
        received = 0

        async def receive_within_limit() -> Message:
            nonlocal received
            if declared is not None and declared > max_bytes:
                raise RequestBodyTooLargeError(max_bytes)
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > max_bytes:
                    raise RequestBodyTooLargeError(max_bytes)
            return message

        await self.app(scope, receive_within_limit, send)

    def _limit_for(self, path: str) -> int:
        for prefix, max_bytes in self.max_bytes_by_prefix.items():
            if path.startswith(prefix):
                return max_bytes
        return self.max_bytes


def _content_length(scope: Scope) -> int | None:
    value = Headers(scope=scope).get("content-length", "")
    return int(value) if value.isdigit() else None


async def require_json_body(request: Request) -> None:
    """Raise 415 when a route that reads JSON gets a body of another media type.

    FastAPI parses a body as JSON only when its Content-Type is `application/json`
    or `application/*+json`. Any other body would fail validation with a message
    that does not mention the header. An empty body is left to validation, which
    reports it as missing.
    """
    if is_json_media_type(request.headers.get("content-type")):
        return
    if not await request.body():
        return
    raise HTTPException(status_code=415)


def is_json_media_type(content_type: str | None) -> bool:
    """Return whether a Content-Type value names JSON, parameters such as charset aside."""
    if not content_type:
        return False
    media_type = content_type.split(";", 1)[0].strip().lower()
    if media_type == "application/json":
        return True
    return media_type.startswith("application/") and media_type.endswith("+json")
