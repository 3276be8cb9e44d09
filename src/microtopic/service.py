"""The generation service: runs the pipeline for one request and stores the outcome.

The request row is written before any LLM call, so a crash leaves a `running`
row to find. The outcome is stored in one transaction: a success writes the
topic and the calls, a failure writes the error and the calls and no topic.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from microtopic.domain import GeneratedTopic, GenerationRequest
from microtopic.errors import MicrotopicError, StorageError
from microtopic.gateway.events import CallEvent
from microtopic.observability import PerformanceStats, RequestCallLog
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


@dataclass(frozen=True)
class GenerationOutcome:
    """A generated topic and how it was made."""

    request_id: str
    topic: GeneratedTopic
    steps: list[StepRecord]
    keys_used: list[str]
    models: list[str]
    tokens: TokenUsage
    llm_calls: int
    duration_ms: float
    prompt_version: str


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
    ) -> None:
        self._deadline_s = deadline_s
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
    ) -> GenerationOutcome:
        """Generate the topic of `request`, store it and return it with its metadata.

        With `lease`, the request is an attempt at a job item: the item is marked
        succeeded with the topic, in one transaction, or `LeaseLostError` is raised and
        the topic is not stored when the attempt no longer holds the item.
        """
        request_id = request_id or uuid.uuid4().hex
        started = time.perf_counter()
        await self._store.start_request(request_id, request, created_at=datetime.now(UTC))
        logger.info("request %s: generating %r", request_id, request.topic_name)

        deadline = None if self._deadline_s is None else time.monotonic() + self._deadline_s
        try:
            result = await self._pipeline.run(request, request_id, deadline=deadline)
        except BaseException as exc:
            await self._record_failure(request_id, exc, started)
            raise

        outcome = _outcome(request_id, result, started, self._pipeline.prompt_version)
        try:
            await self._store_success(request_id, result, outcome, lease)
        except BaseException as exc:
            await self._record_failure(request_id, exc, started)
            raise
        self._record_stats(result, outcome.duration_ms)
        logger.info("request %s: done in %.0f ms", request_id, outcome.duration_ms)
        return outcome

    async def _store_success(
        self,
        request_id: str,
        result: PipelineResult,
        outcome: GenerationOutcome,
        lease: ItemLease | None,
    ) -> None:
        calls = _records(self._call_log.pop(request_id))
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
        )

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
        # Shielded: the failure must be stored even when the request itself is cancelled.
        # When storing fails too, that is logged and the caller still gets the first error.
        try:
            await asyncio.shield(
                self._store.finish_failure(
                    request_id,
                    error_code=code,
                    error_message=message,
                    steps=[],
                    calls=_records(self._call_log.pop(request_id)),
                    finished_at=datetime.now(UTC),
                )
            )
        except StorageError as storage_error:
            logger.error(
                "request %s: could not store its failure: %s", request_id, storage_error.message
            )

    def _record_stats(self, result: PipelineResult, duration_ms: float) -> None:
        self._stats.record("generation", duration_ms)
        for step in result.steps:
            stage = step.name.split(":", 1)[0]
            self._stats.record(f"stage:{stage}", step.duration_ms)


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


def _records(events: list[CallEvent]) -> list[LlmCallRecord]:
    return [
        LlmCallRecord(
            step=event.context.step,
            key_name=event.key_name,
            deployment=event.deployment,
            attempt=event.attempt,
            latency_ms=event.latency_ms,
            prompt_tokens=event.prompt_tokens,
            completion_tokens=event.completion_tokens,
            outcome=event.outcome,
            started_at=event.started_at,
        )
        for event in events
    ]
