"""A gateway observer that keeps each request's call events until the request ends."""

from __future__ import annotations

import threading
from collections import defaultdict

from microtopic.gateway.events import CallEvent


class RequestCallLog:
    """Collects the call events of running requests, keyed by request id.

    The service takes a request's events with `pop` when the request ends, so
    memory holds only requests in flight. Calls without a request id are not kept.
    """

    def __init__(self) -> None:
        self._events: defaultdict[str, list[CallEvent]] = defaultdict(list)
        self._lock = threading.Lock()

    def on_call_completed(self, event: CallEvent) -> None:
        self._add(event)

    def on_call_failed(self, event: CallEvent) -> None:
        self._add(event)

    def pop(self, request_id: str) -> list[CallEvent]:
        """Return and forget the events of `request_id`, oldest first."""
        with self._lock:
            return self._events.pop(request_id, [])

    def _add(self, event: CallEvent) -> None:
        if event.context.request_id is None:
            return
        with self._lock:
            self._events[event.context.request_id].append(event)
