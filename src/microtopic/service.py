"""The generation service: runs the pipeline for one request and stores the outcome.

The request row is written before any LLM call, so a crash leaves a `running`
row to find. The outcome is stored in one transaction: a success writes the
topic and the calls, a failure writes the error and the calls and no topic.

With the content cache on, a request may get its topic from the cache, or from an
identical request that generated it at the same time. It still gets its own row:
succeeded, with no LLM calls, and `cache` as the topic's provider.

Each request collects its trace in memory (`observability.tracing`) and stores it
with the outcome, in the same transaction. Steps go to the request's steps and LLM
attempts to their calls, as before; the other spans go with them. With a trace
exporter, the finished trace is then handed to it too, whether or not the outcome
could be stored.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable
from dataclasses import dataclass
from datetime import UTC, datetime

from microtopic.cache import CachedTopic, TopicCache
from microtopic.domain import GeneratedTopic, GenerationRequest
from microtopic.errors import MicrotopicError, StorageError
from microtopic.observability import Metrics, PerformanceStats, RequestCallLog
from microtopic.observability.export import FinishedTrace, TraceExporter, export_trace
from microtopic.observability.trace_records import call_records, trace_spans, trace_steps
from microtopic.observability.tracing import SpanKind, Trace, current_trace, record_span, span
from microtopic.pipeline import LessonPipeline, PipelineResult
from microtopic.storage import GenerationStore, ItemLease
from microtopic.storage.records import LlmCallRecord, StepRecord

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TokenUsage:
    """Tokens spent by a request's successful calls."""

    prompt_tokens: int
    completion_tokens: int

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


# The `provider` stored with a topic that came from the cache, and the one step recorded.
CACHE_PROVIDER = "cache"
CACHE_STEP = "cache"


@dataclass(frozen=True)
class GenerationOutcome:
    """A generated topic and how it was made.

    `cached` is set when the topic came from the cache, or from an identical request
    that generated it meanwhile. Such an outcome has no keys, tokens or LLM calls,
    and its `models` are those that generated the topic.
    """

    request_id: str
    topic: GeneratedTopic
    steps: list[StepRecord]
    keys_used: list[str]
    models: list[str]
    tokens: TokenUsage
    llm_calls: int
    duration_ms: float
    prompt_version: str
    cached: bool = False


class GenerationService:
    """Generates topics and records every request, success or failure."""

    def __init__(
        self,
        pipeline: LessonPipeline,
        store: GenerationStore,
        stats: PerformanceStats,
        call_log: RequestCallLog,
        *,
        deadline_s: float | None = None,
        cache: TopicCache | None = None,
        metrics: Metrics | None = None,
        trace_exporter: TraceExporter | None = None,
    ) -> None:
        self._deadline_s = deadline_s
        self._cache = cache
        self._metrics = metrics or Metrics()
        self._trace_exporter = trace_exporter
        self._pipeline = pipeline
        self._store = store
        self._stats = stats
        self._call_log = call_log

    async def generate(
        self,
        request: GenerationRequest,
        *,
        request_id: str | None = None,
        lease: ItemLease | None = None,
        received_at: float | None = None,
    ) -> GenerationOutcome:
        """Generate the topic of `request`, or take it from the cache, store it and return it.

        With `lease`, the request is an attempt at a job item: the item is marked
        succeeded with the topic, in one transaction, or `LeaseLostError` is raised and
        the topic is not stored when the attempt no longer holds the item.
        `received_at` (monotonic clock) is when the HTTP request arrived; the trace
        then shows the time from then until now as the request's validation.
        """
        request_id = request_id or uuid.uuid4().hex
        trace = Trace()
        token = current_trace.set(trace)
        try:
            if received_at is not None:
                record_span("validate request", SpanKind.VALIDATION, received_at, trace.started)
            return await self._generate(request, request_id, lease)
        finally:
            current_trace.reset(token)

    async def _generate(
        self, request: GenerationRequest, request_id: str, lease: ItemLease | None
    ) -> GenerationOutcome:
        started = time.perf_counter()
        started_at = datetime.now(UTC)
        with span("store request", SpanKind.STORAGE):
            await self._store.start_request(request_id, request, created_at=started_at)
        # The topic is user text that goes into the prompts, so it is not logged here.
        # With `log_prompts`, the gateway logs each prompt whole.
        logger.info("request %s: generation started", request_id)

        deadline = None if self._deadline_s is None else time.monotonic() + self._deadline_s
        try:
            served = await self._serve(request, request_id, deadline)
        except BaseException as exc:
            await self._record_failure(request_id, exc, started)
            raise

        if self._cache is not None:
            self._metrics.cache_lookup(hit=isinstance(served, CachedTopic))
        try:
            if isinstance(served, CachedTopic):
                outcome = await self._finish_from_cache(
                    request, request_id, served, started, started_at, lease
                )
            else:
                outcome = await self._finish_generated(request_id, served, started, lease)
        except BaseException as exc:
            await self._record_failure(request_id, exc, started)
            raise
        logger.info("request %s: done in %.0f ms", request_id, outcome.duration_ms)
        return outcome

    async def _serve(
        self, request: GenerationRequest, request_id: str, deadline: float | None
    ) -> PipelineResult | CachedTopic:
        def generate() -> Awaitable[PipelineResult]:
            return self._pipeline.run(request, request_id, deadline=deadline)

        def to_entry(result: PipelineResult) -> CachedTopic:
            return CachedTopic(
                topic=result.topic,
                prompt_version=self._pipeline.prompt_version,
                models=sorted({reply.result.model for reply in result.replies}),
                request_id=request_id,
                created_at=datetime.now(UTC),
            )

        if self._cache is None:
            return await generate()
        return await self._cache.get_or_generate(request, generate, to_entry, deadline=deadline)

    async def _finish_generated(
        self, request_id: str, result: PipelineResult, started: float, lease: ItemLease | None
    ) -> GenerationOutcome:
        outcome = _outcome(request_id, result, started, self._pipeline.prompt_version)
        await self._store_success(request_id, result, outcome, lease)
        self._record_stats(result, outcome.duration_ms)
        return outcome

    async def _finish_from_cache(
        self,
        request: GenerationRequest,
        request_id: str,
        entry: CachedTopic,
        started: float,
        started_at: datetime,
        lease: ItemLease | None,
    ) -> GenerationOutcome:
        finished_at = datetime.now(UTC)
        step = StepRecord(CACHE_STEP, started_at, finished_at)
        outcome = _cached_outcome(request_id, entry.relabel(request), entry, step, started)
        storing_since = time.monotonic()
        await self._store.finish_success(
            request_id,
            topic=outcome.topic,
            prompt_version=entry.prompt_version,
            provider=CACHE_PROVIDER,
            model=",".join(entry.models),
            prompt_tokens=0,
            completion_tokens=0,
            steps=[step],
            calls=[],
            finished_at=finished_at,
            lease=lease,
            spans=trace_spans(),
        )
        self._export_trace(request_id, [], storing_since)
        self._stats.record("cache_hit", outcome.duration_ms)
        logger.info(
            "request %s: served from the cache, generated by request %s",
            request_id,
            entry.request_id,
        )
        return outcome

    async def _store_success(
        self,
        request_id: str,
        result: PipelineResult,
        outcome: GenerationOutcome,
        lease: ItemLease | None,
    ) -> None:
        calls = call_records(self._call_log.pop(request_id))
        storing_since = time.monotonic()
        await self._store.finish_success(
            request_id,
            topic=result.topic,
            prompt_version=outcome.prompt_version,
            provider=",".join(sorted({reply.provider for reply in result.replies})),
            model=",".join(outcome.models),
            prompt_tokens=outcome.tokens.prompt_tokens,
            completion_tokens=outcome.tokens.completion_tokens,
            steps=result.steps,
            calls=calls,
            finished_at=datetime.now(UTC),
            lease=lease,
            spans=trace_spans(),
        )
        self._export_trace(request_id, calls, storing_since)

    async def _record_failure(self, request_id: str, exc: BaseException, started: float) -> None:
        duration_ms = (time.perf_counter() - started) * 1000
        self._stats.record("generation", duration_ms, ok=False)
        if isinstance(exc, MicrotopicError):
            code, message = exc.code, exc.message
            logger.warning("request %s failed: %s", request_id, message)
        elif isinstance(exc, asyncio.CancelledError):
            code, message = "cancelled", "The request was cancelled before it finished."
            logger.info("request %s cancelled", request_id)
        else:
            code, message = "internal_error", "An unexpected error stopped the generation."
            logger.exception("request %s failed unexpectedly", request_id, exc_info=exc)
        self._metrics.generation(duration_ms, code)
        calls = call_records(self._call_log.pop(request_id))
        storing_since = time.monotonic()
        storage_error_code = None
        # Shielded: the failure must be stored even when the request itself is cancelled.
        # When storing fails too, that is logged and the caller still gets the first error.
        try:
            await asyncio.shield(
                self._store.finish_failure(
                    request_id,
                    error_code=code,
                    error_message=message,
                    steps=trace_steps(),
                    calls=calls,
                    finished_at=datetime.now(UTC),
                    spans=trace_spans(),
                )
            )
        except StorageError as storage_error:
            storage_error_code = storage_error.code
            logger.error(
                "request %s: could not store its failure: %s", request_id, storage_error.message
            )
        finally:
            self._export_trace(
                request_id,
                calls,
                storing_since,
                error_code=code,
                storage_error=storage_error_code,
            )

    def _export_trace(
        self,
        request_id: str,
        calls: list[LlmCallRecord],
        storing_since: float,
        *,
        error_code: str | None = None,
        storage_error: str | None = None,
    ) -> None:
        trace = current_trace.get()
        if self._trace_exporter is None or trace is None:
            return
        finished = FinishedTrace(
            request_id=request_id,
            trace=trace,
            calls=calls,
            error_code=error_code,
            storing_since=storing_since,
            finished=time.monotonic(),
            storage_error=storage_error,
        )
        export_trace(self._trace_exporter, finished)

    def _record_stats(self, result: PipelineResult, duration_ms: float) -> None:
        self._stats.record("generation", duration_ms)
        self._metrics.generation(duration_ms, "success")
        for step in result.steps:
            stage = step.name.split(":", 1)[0]
            self._stats.record(f"stage:{stage}", step.duration_ms)
            self._metrics.stage(stage, step.duration_ms)


def _outcome(
    request_id: str, result: PipelineResult, started: float, prompt_version: str
) -> GenerationOutcome:
    replies = result.replies
    return GenerationOutcome(
        request_id=request_id,
        topic=result.topic,
        steps=result.steps,
        keys_used=sorted({reply.key_name for reply in replies}),
        models=sorted({reply.result.model for reply in replies}),
        tokens=TokenUsage(
            prompt_tokens=sum(reply.result.prompt_tokens for reply in replies),
            completion_tokens=sum(reply.result.completion_tokens for reply in replies),
        ),
        llm_calls=sum(reply.attempts for reply in replies),
        duration_ms=(time.perf_counter() - started) * 1000,
        prompt_version=prompt_version,
    )


def _cached_outcome(
    request_id: str, topic: GeneratedTopic, entry: CachedTopic, step: StepRecord, started: float
) -> GenerationOutcome:
    return GenerationOutcome(
        request_id=request_id,
        topic=topic,
        steps=[step],
        keys_used=[],
        models=entry.models,
        tokens=TokenUsage(prompt_tokens=0, completion_tokens=0),
        llm_calls=0,
        duration_ms=(time.perf_counter() - started) * 1000,
        prompt_version=entry.prompt_version,
        cached=True,
    )
