"""The shared resources of a running service, built once from the settings.

The HTTP app creates a `Runtime` in its lifespan and the CLI creates one per
command; nothing here is a module global.

Jobs run where `jobs.runner` sets. With `in_process`, a runtime started with
`run_jobs=True` (the HTTP app, `microtopic batch`) runs an `InProcessRunner`, and
one started without it only stores the jobs it submits, for another process to
run. With `arq`, every runtime queues the items it submits in Redis, and
`microtopic worker` runs them.

With `telemetry.otlp_endpoint` set, every runtime (the HTTP app, a worker, a CLI
command) exports the traces of the requests it generates and the calls it forwards.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

import redis.asyncio

from microtopic import tokens
from microtopic.cache import TopicCache, build_topic_cache
from microtopic.config import JobRunnerKind, Settings
from microtopic.errors import QueueUnavailableError
from microtopic.gateway import Gateway
from microtopic.jobs.executor import ItemExecutor
from microtopic.jobs.queue import ArqQueue
from microtopic.jobs.runner import InProcessRunner
from microtopic.jobs.service import JobService
from microtopic.keypool import HealthMonitor
from microtopic.observability import (
    CallStatsRecorder,
    DeferredObserver,
    ErrorStats,
    Metrics,
    PerformanceStats,
    RequestCallLog,
)
from microtopic.observability.export import TraceExporter, load_trace_exporter
from microtopic.observability.retention import TracePruner
from microtopic.passthrough import PassthroughService
from microtopic.pipeline import LessonPipeline, PromptLibrary
from microtopic.providers.factory import build_pool
from microtopic.redis_client import connect
from microtopic.service import GenerationService
from microtopic.storage import (
    Database,
    GenerationStore,
    JobStore,
    PassthroughStore,
    TraceStore,
)

logger = logging.getLogger(__name__)


@dataclass
class Runtime:
    """Everything a request needs: database, gateway, pipeline, content cache and stats.

    `cache` is None when the settings turn the content cache off. `traces` reads the
    stored request traces, and `pruner` deletes the old ones in the background.
    `trace_exporter` sends finished traces to OpenTelemetry, or is None when
    `telemetry.otlp_endpoint` is unset.
    `stats` times operations, and `error_stats` counts LLM call attempts by outcome.
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
    job_store: JobStore
    executor: ItemExecutor
    jobs: JobService
    runner: InProcessRunner | None
    queue: ArqQueue | None
    traces: TraceStore
    pruner: TracePruner
    metrics: Metrics = field(default_factory=Metrics)
    trace_exporter: TraceExporter | None = None
    error_stats: ErrorStats = field(default_factory=ErrorStats)

    @classmethod
    async def start(cls, settings: Settings, *, run_jobs: bool = False) -> Runtime:
        """Migrate the database and build the key pool, gateway, pipeline, cache and jobs.

        `run_jobs` starts an in-process runner when `jobs.runner` is `in_process`.
        Nothing connects to Redis here but the job queue's check: the cache and the
        pool connect on first use, and a Redis that cannot be reached then only
        turns them off for a while. Raises `ConfigError` when trace export is set up
        but the OpenTelemetry packages are not installed.
        """
        trace_exporter = load_trace_exporter(settings.telemetry)
        database = Database(settings.database_url, setting=settings.database_url_setting)
        try:
            await database.upgrade()
        except BaseException:
            await database.dispose()
            if trace_exporter is not None:
                await trace_exporter.aclose()
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
        error_stats = ErrorStats()
        call_log = RequestCallLog()
        # The call log stays direct: the service reads it as soon as a request ends.
        gateway.subscribe(DeferredObserver([CallStatsRecorder(stats), metrics, error_stats]))
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
            trace_exporter=trace_exporter,
        )
        passthrough_store = (
            PassthroughStore(database) if settings.traces.store_passthrough else None
        )
        passthrough = PassthroughService(
            gateway, stats, call_log, store=passthrough_store, trace_exporter=trace_exporter
        )
        health = HealthMonitor(gateway.pool)
        health.start()

        job_store = JobStore(database)
        queue = None
        if settings.jobs.runner is JobRunnerKind.ARQ:
            queue = ArqQueue.from_settings(settings)
            await _warn_if_unreachable(queue)
        executor = ItemExecutor(service, job_store, settings.jobs, retries=queue)
        runner = None
        if settings.jobs.runner is JobRunnerKind.IN_PROCESS and run_jobs:
            runner = InProcessRunner(job_store, executor, settings.jobs)
            runner.start()
        jobs = JobService(job_store, runner or queue)
        traces = TraceStore(database)
        pruner = TracePruner(traces, settings.traces)
        pruner.start()
        logger.info("runtime started with %d keys", len(gateway.pool.keys))
        return cls(
            settings=settings,
            database=database,
            store=store,
            gateway=gateway,
            stats=stats,
            service=service,
            health=health,
            passthrough=passthrough,
            redis=redis_client,
            cache=cache,
            job_store=job_store,
            executor=executor,
            jobs=jobs,
            runner=runner,
            queue=queue,
            traces=traces,
            pruner=pruner,
            metrics=metrics,
            trace_exporter=trace_exporter,
            error_stats=error_stats,
        )

    async def aclose(self) -> None:
        """Stop the job runner, then close the clients, the trace export, Redis and the database.

        The runner stops first, because putting its items back needs the database.
        The trace export sends the spans still queued before it stops.
        """
        try:
            if self.runner is not None:
                await self.runner.aclose()
            if self.queue is not None:
                await self.queue.aclose()
            await self.pruner.stop()
            await self.health.stop()
            await self.gateway.pool.aclose()
            await self.gateway.aclose()
        finally:
            try:
                if self.trace_exporter is not None:
                    await self.trace_exporter.aclose()
            finally:
                await self._close_connections()

    async def _close_connections(self) -> None:
        try:
            if self.cache is not None:
                await self.cache.aclose()
            if self.redis is not None:
                await self.redis.aclose()
        finally:
            await self.database.dispose()


async def _warn_if_unreachable(queue: ArqQueue) -> None:
    # Submissions still work without Redis: their items wait in the database, and the
    # workers queue them once Redis is back.
    try:
        await queue.check()
    except QueueUnavailableError as exc:
        logger.warning("%s Jobs are stored but not queued until it is back.", exc.message)
