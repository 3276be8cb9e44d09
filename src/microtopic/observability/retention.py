"""The retention of request traces: a task that prunes old spans periodically."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime, timedelta

from microtopic.config import TracesConfig
from microtopic.errors import StorageError
from microtopic.storage import TraceStore

logger = logging.getLogger(__name__)


class TracePruner:
    """Deletes the spans of requests older than `retention_s`, at start and every interval."""

    def __init__(self, traces: TraceStore, config: TracesConfig) -> None:
        self._traces = traces
        self._config = config
        self._task: asyncio.Task[None] | None = None

    def oldest_kept(self) -> datetime:
        """Return the creation time before which a request's trace is no longer kept."""
        return datetime.now(UTC) - timedelta(seconds=self._config.retention_s)

    async def prune(self) -> int:
        """Delete the spans past the retention now, and return how many were deleted."""
        deleted = await self._traces.prune(before=self.oldest_kept())
        if deleted:
            logger.info(
                "pruned %d trace spans older than %.0f s", deleted, self._config.retention_s
            )
        return deleted

    def start(self) -> None:
        """Prune now and then every `prune_interval_s` seconds, until `stop`."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="trace-pruner")

    async def stop(self) -> None:
        if self._task is None:
            return
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None

    async def _run(self) -> None:
        interval_s = self._config.prune_interval_s
        while True:
            try:
                await self.prune()
            except StorageError as exc:
                # The next round tries again, so the traces only stay a little longer.
                logger.warning(
                    "could not prune old traces, trying again in %.0f s: %s",
                    interval_s,
                    exc.message,
                )
            await asyncio.sleep(interval_s)
