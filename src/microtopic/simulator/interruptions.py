"""Responses that do not complete normally: a call held open, and a connection dropped.

- `HangingResponse` (the `hang` fault) sends nothing until the client disconnects,
  as a client timeout does. If `hang_s` real seconds pass first, it sends its 408
  response.
- `DroppedConnectionResponse` (the `connection_reset` fault) sends the status line,
  the headers and the first half of a body, then returns without finishing it, so
  uvicorn closes the connection and the client sees the body cut short. uvicorn logs
  "ASGI callable returned without completing response." at error level each time.

Their outcome is known only once they have been sent, so the app passes each a
callback that records it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from microtopic.simulator.state import Interruption

logger = logging.getLogger(__name__)

Outcome = int | Interruption
OutcomeCallback = Callable[[Outcome], None]


class InterruptingResponse(Response):
    """A response that reports how it ended, an HTTP status or an interruption, once sent."""

    _on_end: OutcomeCallback | None = None

    def report_to(self, on_end: OutcomeCallback) -> None:
        """Call `on_end` with the outcome once the response has ended."""
        self._on_end = on_end

    def _end(self, outcome: Outcome) -> None:
        if self._on_end is not None:
            self._on_end(outcome)


class HangingResponse(InterruptingResponse):
    """Holds the call open until the client disconnects, or sends `timeout` after `hang_s`."""

    def __init__(self, timeout: Response, hang_s: float) -> None:
        super().__init__(timeout.body, timeout.status_code, headers=dict(timeout.headers))
        self._hang_s = hang_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            async with asyncio.timeout(self._hang_s):
                await _wait_for_disconnect(receive)
        except TimeoutError:
            await super().__call__(scope, receive, send)
            self._end(self.status_code)
            return
        logger.debug("A hanging call ended because its client disconnected")
        self._end(Interruption.CLIENT_DISCONNECT)


class DroppedConnectionResponse(InterruptingResponse):
    """Sends the head and the first half of `full`'s body, then drops the connection.

    It reads the request body first, so it must be the response to a request whose
    body nothing has read yet.
    """

    def __init__(self, full: Response) -> None:
        super().__init__(full.body, full.status_code, headers=dict(full.headers))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # A socket closed with unread input sends a TCP reset, which some clients report
        # before the partial body. With the input read, the close is an orderly one and
        # every client sees the body cut short.
        await _read_request_body(receive)

        start = {"type": "http.response.start", "status": self.status_code}
        await send({**start, "headers": self.raw_headers})
        # `more_body` promises the rest, which never comes. The server then closes the
        # connection, and the client reads fewer bytes than `content-length`.
        part = self.body[: len(self.body) // 2]
        await send({"type": "http.response.body", "body": part, "more_body": True})
        self._end(Interruption.CONNECTION_RESET)


async def _read_request_body(receive: Receive) -> None:
    more_body = True
    while more_body:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        more_body = message.get("more_body", False)


async def _wait_for_disconnect(receive: Receive) -> None:
    # The first messages carry the request body, which no one reads. After them, the
    # server's `receive` waits until the connection is closed.
    while (await receive())["type"] != "http.disconnect":
        pass
