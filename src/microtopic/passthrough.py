"""The passthrough service: other applications' chat calls, sent through our key pool.

A client's chat-completions body is forwarded as sent, with `model` set to the
chosen key's deployment or model, through the gateway's quotas, failover and
retries. Each forwarded call is timed as the `passthrough` operation.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

from microtopic.gateway import CallContext, Gateway, GatewayResult
from microtopic.observability import PerformanceStats, RequestCallLog
from microtopic.providers.base import PassthroughRequest

logger = logging.getLogger(__name__)

STEP = "passthrough"


class PassthroughService:
    """Forwards clients' chat bodies through the gateway and records how each call went."""

    def __init__(self, gateway: Gateway, stats: PerformanceStats, call_log: RequestCallLog) -> None:
        self._gateway = gateway
        self._stats = stats
        self._call_log = call_log

    async def forward(self, body: Mapping[str, Any], *, request_id: str) -> GatewayResult:
        """Return the reply of the first key that serves `body`, or raise the gateway's error."""
        context = CallContext(request_id=request_id, step=STEP)
        started = time.perf_counter()
        succeeded = False
        try:
            result = await self._gateway.forward(PassthroughRequest(body), context)
            succeeded = True
        finally:
            duration_ms = (time.perf_counter() - started) * 1000
            self._stats.record(STEP, duration_ms, ok=succeeded)
            # The call log keeps events for the generation service to store; nothing
            # stores a passthrough call's events, so they are dropped here.
            self._call_log.pop(request_id)
        logger.info(
            "request %s: forwarded through key %s in %.0f ms (attempt %d)",
            request_id,
            result.key_name,
            duration_ms,
            result.attempts,
        )
        return result
