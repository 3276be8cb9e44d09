"""The body size limit as an ASGI middleware: how much of a body it lets the app read."""

from __future__ import annotations

import pytest
from starlette.requests import Request
from starlette.types import Message, Receive, Scope, Send

from microtopic.api.body import (
    BodySizeLimitMiddleware,
    RequestBodyTooLargeError,
    is_json_media_type,
)

LIMIT = 1024
CHUNK = b"x" * 256


class ChunkedBody:
    """An ASGI `receive` that returns `count` chunks and counts how many were read."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.reads = 0

    async def __call__(self) -> Message:
        self.reads += 1
        more = self.reads < self.count
        return {"type": "http.request", "body": CHUNK, "more_body": more}


async def read_body(scope: Scope, receive: Receive, send: Send) -> None:
    await Request(scope, receive).body()


async def no_send(message: Message) -> None:
    raise AssertionError("the app under test sends nothing")


def http_scope(path: str = "/api", content_length: int | None = None) -> Scope:
    headers = [] if content_length is None else [(b"content-length", str(content_length).encode())]
    return {"type": "http", "method": "POST", "path": path, "headers": headers}


async def test_declared_large_body_is_never_read() -> None:
    middleware = BodySizeLimitMiddleware(read_body, max_bytes=LIMIT)
    body = ChunkedBody(count=200_000)

    with pytest.raises(RequestBodyTooLargeError) as caught:
        await middleware(http_scope(content_length=50 * 2**20), body, no_send)

    assert body.reads == 0
    assert caught.value.status_code == 413
    assert caught.value.max_bytes == LIMIT


async def test_chunked_body_stops_past_limit() -> None:
    middleware = BodySizeLimitMiddleware(read_body, max_bytes=LIMIT)
    body = ChunkedBody(count=1000)

    with pytest.raises(RequestBodyTooLargeError):
        await middleware(http_scope(), body, no_send)

    assert body.reads == LIMIT // len(CHUNK) + 1


async def test_body_at_limit_is_read() -> None:
    middleware = BodySizeLimitMiddleware(read_body, max_bytes=LIMIT)
    body = ChunkedBody(count=LIMIT // len(CHUNK))

    await middleware(http_scope(content_length=LIMIT), body, no_send)

    assert body.reads == LIMIT // len(CHUNK)


async def test_prefix_gets_its_own_limit() -> None:
    middleware = BodySizeLimitMiddleware(
        read_body, max_bytes=LIMIT, max_bytes_by_prefix={"/v1/": 4 * LIMIT}
    )
    body = ChunkedBody(count=4 * LIMIT // len(CHUNK))

    await middleware(http_scope("/v1/chat/completions", 4 * LIMIT), body, no_send)

    assert body.reads == 4 * LIMIT // len(CHUNK)


@pytest.mark.parametrize(
    ("content_type", "expected"),
    [
        ("application/json", True),
        ("Application/JSON; charset=utf-8", True),
        ("application/merge-patch+json", True),
        ("text/plain", False),
        ("text/json", False),
        ("application/x-www-form-urlencoded", False),
        ("", False),
        (None, False),
    ],
)
def test_json_media_types(content_type: str | None, expected: bool) -> None:
    result = is_json_media_type(content_type)

    assert result is expected
