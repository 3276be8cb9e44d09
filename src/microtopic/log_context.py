"""The request id and key name of the work in progress, for every log line about them.

The request id middleware sets `current_request_id` for each HTTP request (the
`generate` command for its run), the gateway sets both around each attempt on a
key, and the health monitor sets the key around each check. The logging filter that the entry
point installs (`microtopic.cli.logs`) copies them onto every record, so call sites
need not pass them. asyncio copies the context into each task it creates, so the
tasks a request starts carry its id too.
"""

from __future__ import annotations

from contextvars import ContextVar

current_request_id: ContextVar[str | None] = ContextVar("microtopic_request_id", default=None)
current_key_name: ContextVar[str | None] = ContextVar("microtopic_key_name", default=None)
