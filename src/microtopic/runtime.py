"""The shared resources of a running service, built once from the settings.

The HTTP app creates a `Runtime` in its lifespan and the CLI creates one per
command; nothing here is a module global.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

import redis.asyncio

from microtopic import tokens
from microtopic.cache import TopicCache, build_topic_cache
from microtopic.config import Settings
from microtopic.gateway import Gateway
from microtopic.keypool import HealthMonitor
from microtopic.observability import (
    CallStatsRecorder,
    DeferredObserver,
    Metrics,
    PerformanceStats,
    RequestCallLog,
)
from microtopic.observability.retention import TracePruner
from microtopic.passthrough import PassthroughService
from microtopic.pipeline import LessonPipeline, PromptLibrary
from microtopic.providers.factory import build_pool
from microtopic.redis_client import connect
from microtopic.service import GenerationService
from microtopic.storage import Database, GenerationStore, TraceStore

logger = logging.getLogger(__name__)


@dataclass
class Runtime:
    """Everything a request needs: database, gateway, pipeline, content cache and stats.

    `cache` is None when the settings turn the content cache off. `traces` reads the
    stored request traces, and `pruner` deletes the old ones in the background.
    """

    settings: Settings
    database: Database
    store: GenerationStore
    gateway: Gateway
    stats: PerformanceStats
    service: GenerationService
    health: HealthMonitor
    passthrough: PassthroughService
    redis: redis.asyncio.Redis | None
    cache: TopicCache | None
    traces: TraceStore
    pruner: TracePruner
    metrics: Metrics = field(default_factory=Metrics)

    @classmethod
    async def start(cls, settings: Settings) -> Runtime:
        """Migrate the database and build the key pool, gateway, pipeline and cache.

        Nothing connects to Redis here: the cache connects on its first use, and
        a Redis that cannot be reached then only turns the cache off for a while.
        """
        database = Database(settings.database_url)
        try:
            await database.upgrade()
        except BaseException:
            await database.dispose()
            raise
        store = GenerationStore(database)
        # Load the token table now, not in the middle of the first request (about 0.5 s).
        await asyncio.to_thread(tokens.encoding)

        gateway_config = settings.effective_gateway()
        redis_client = connect(settings)
        gateway = Gateway(
            build_pool(settings, gateway_config, redis_client),
            gateway_config,
            log_prompts=settings.log_prompts,
        )
        gateway.pool.start()
        stats = PerformanceStats()
        metrics = Metrics()
        call_log = RequestCallLog()
        # The call log stays direct: the service reads it as soon as a request ends.
        gateway.subscribe(DeferredObserver([CallStatsRecorder(stats), metrics]))
        gateway.subscribe(call_log)
        metrics.watch(gateway)

        pipeline = LessonPipeline(gateway, PromptLibrary.load_default())
        deadline_s = gateway_config.request_deadline_s
        cache = build_topic_cache(
            settings, prompt_version=pipeline.prompt_version, deadline_s=deadline_s
        )
        service = GenerationService(
            pipeline,
            store,
            stats,
            call_log,
            deadline_s=deadline_s,
            cache=cache,
            metrics=metrics,
        )
        passthrough = PassthroughService(gateway, stats, call_log)
        health = HealthMonitor(gateway.pool)
        health.start()
        traces = TraceStore(database)
        pruner = TracePruner(traces, settings.traces)
        pruner.start()
        logger.info("runtime started with %d keys", len(gateway.pool.keys))
        return cls(
            settings,
            database,
            store,
            gateway,
            stats,
            service,
            health,
            passthrough,
            redis_client,
            cache,
            traces,
            pruner,
            metrics=metrics,
        )

    async def aclose(self) -> None:
        """Close provider clients, the cache's connections and database connections."""
        try:
            await self.pruner.stop()
            await self.health.stop()
            await self.gateway.pool.aclose()
            await self.gateway.aclose()
        finally:
            try:
                if self.cache is not None:
                    await self.cache.aclose()
                if self.redis is not None:
                    await self.redis.aclose()
            finally:
                await self.database.dispose()
