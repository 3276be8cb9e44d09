"""Outage tracking of the cache backend: one warning per outage instead of one per request."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from microtopic.errors import RedisUnavailableError

logger = logging.getLogger(__name__)

# After a failure the backend is left alone this long, so that requests do not each
# wait for a server that is down. The first request after the pause tries again.
RETRY_AFTER_S = 5.0


class BackendHealth:
    """Tracks outages of the backend called `name`.

    The first failure of an outage logs a warning and starts a pause of
    `retry_after_s` seconds, during which `available` is false. Failures within an
    outage log nothing more; the first success after one logs that the backend is
    back. `clock` is a monotonic clock in seconds.
    """

    def __init__(
        self,
        name: str,
        *,
        retry_after_s: float = RETRY_AFTER_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._name = name
        self._retry_after_s = retry_after_s
        self._clock = clock
        self._in_outage = False
        self._paused_until = 0.0

    @property
    def available(self) -> bool:
        """Whether the backend may be called now: false during the pause after a failure."""
        return self._clock() >= self._paused_until

    @property
    def in_outage(self) -> bool:
        """Whether the last call failed."""
        return self._in_outage

    def record_failure(self, error: RedisUnavailableError) -> None:
        self._paused_until = self._clock() + self._retry_after_s
        if self._in_outage:
            return
        self._in_outage = True
        logger.warning(
            "The content cache is skipped, so identical requests are generated again, "
            "until %s responds: %s",
            self._name,
            error.message,
        )

    def record_success(self) -> None:
        if not self._in_outage:
            return
        self._in_outage = False
        logger.info("The content cache is back: %s responds again.", self._name)
