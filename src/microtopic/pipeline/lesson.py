"""The lesson pipeline: planner, then writer, quiz author and reviewer per microtopic.

Microtopics are written in parallel through the gateway. Each output is
validated against its schema (with one repair), then the reviewer checks rules
the schema cannot express and requests up to `MAX_REWRITES` rewrites of the part
that fails. Each lesson keeps the title it was asked for: the requested name, or
the planner's title, whatever title the writer returned.
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

from pydantic import BaseModel

from microtopic.domain import (
    Depth,
    GeneratedTopic,
    GenerationRequest,
    Microtopic,
    MicrotopicDraft,
    PlannedMicrotopic,
    QuizDraft,
    TopicPlan,
)
from microtopic.errors import InvalidModelOutputError
from microtopic.gateway import CallContext, Gateway, GatewayResult
from microtopic.observability.tracing import SpanKind, span
from microtopic.pipeline import reviewer
from microtopic.pipeline.prompts import PromptLibrary, escape_user_text
from microtopic.pipeline.structured import StructuredStep, run_step, with_correction
from microtopic.providers.base import ChatMessage
from microtopic.storage.records import StepRecord

T = TypeVar("T", bound=BaseModel)
R = TypeVar("R")

QUESTION_COUNT = {Depth.LITE: 2, Depth.FULL: 4}
DEPTH_GUIDANCE = {
    Depth.LITE: "Keep it short: an explanation of one to three short paragraphs.",
    Depth.FULL: "Go into depth: an explanation of four to eight paragraphs with examples.",
}
WRITER_MAX_TOKENS = {Depth.LITE: 1500, Depth.FULL: 3500}
PLANNER_MAX_TOKENS = 800
QUIZ_MAX_TOKENS = 1500
# The second rewrite gives small models, such as the embedded 135M one, another chance
# to drop a repeated quiz question or key point.
MAX_REWRITES = 2


@dataclass
class PipelineResult:
    """A finished topic with the steps it took and every gateway reply."""

    topic: GeneratedTopic
    steps: list[StepRecord]
    replies: list[GatewayResult]


@dataclass
class _Run:
    request: GenerationRequest
    request_id: str
    deadline: float | None = None
    steps: list[StepRecord] = field(default_factory=list)
    replies: list[GatewayResult] = field(default_factory=list)

    def context(self, step: str) -> CallContext:
        return CallContext(self.request_id, step, self.request.is_retry, self.deadline)


class LessonPipeline:
    """Turns a generation request into a validated topic."""

    def __init__(self, gateway: Gateway, prompts: PromptLibrary) -> None:
        self._gateway = gateway
        self._prompts = prompts

    @property
    def prompt_version(self) -> str:
        return self._prompts.version

    async def run(
        self, request: GenerationRequest, request_id: str, *, deadline: float | None = None
    ) -> PipelineResult:
        """Generate every microtopic of `request`; raise on the first failure.

        `deadline` (monotonic clock) bounds every call of the request together.
        """
        run = _Run(request, request_id, deadline)
        if request.microtopics:
            # Named microtopics skip the planner, so no "plan" step is recorded.
            planned = [PlannedMicrotopic(title=name, summary=name) for name in request.microtopics]
        else:
            planned = await self._timed(run, "plan", lambda: self._plan(run))

        try:
            async with asyncio.TaskGroup() as group:
                tasks = [
                    group.create_task(self._write_microtopic(run, index, item))
                    for index, item in enumerate(planned, start=1)
                ]
        except* Exception as failures:  # noqa: BLE001 - re-raised below
            # The first failure cancels the other microtopics; callers get that error itself.
            raise failures.exceptions[0] from None
        topic = GeneratedTopic(
            course_id=request.course_id,
            subject_name=request.subject_name,
            topic_name=request.topic_name,
            language=request.language,
            audience=request.audience,
            depth=request.depth,
            microtopics=[task.result() for task in tasks],
        )
        run.steps.sort(key=lambda step: step.started_at)
        return PipelineResult(topic, run.steps, run.replies)

    async def _plan(self, run: _Run) -> list[PlannedMicrotopic]:
        messages = self._prompts.get("planner").render(request=self._request_block(run.request))
        step = StructuredStep("plan", TopicPlan, PLANNER_MAX_TOKENS)
        plan = await self._generate_reviewed(run, "plan", step, messages, reviewer.review_plan)
        return plan.microtopics

    async def _write_microtopic(self, run: _Run, index: int, item: PlannedMicrotopic) -> Microtopic:
        written = await self._timed(run, f"write:{index}", lambda: self._write(run, index, item))
        # The writer is asked to copy the title, but small models rewrite it or add junk.
        draft = MicrotopicDraft.model_validate({**written.model_dump(), "title": item.title})
        quiz = await self._timed(run, f"quiz:{index}", lambda: self._quiz(run, index, draft))
        return Microtopic(**draft.model_dump(), quiz=quiz.questions)

    async def _write(self, run: _Run, index: int, item: PlannedMicrotopic) -> MicrotopicDraft:
        microtopic = f"Title: {item.title}\nSummary: {item.summary}"
        messages = self._prompts.get("writer").render(
            request=self._request_block(run.request),
            microtopic=escape_user_text(microtopic),
            depth_guidance=DEPTH_GUIDANCE[run.request.depth],
        )
        step = StructuredStep(
            f"write:{index}", MicrotopicDraft, WRITER_MAX_TOKENS[run.request.depth]
        )
        return await self._generate_reviewed(
            run, f"write:{index}", step, messages, reviewer.review_draft
        )

    async def _quiz(self, run: _Run, index: int, draft: MicrotopicDraft) -> QuizDraft:
        count = QUESTION_COUNT[run.request.depth]
        lesson = f"{draft.title}\n\n{draft.explanation}\n\nKey points:\n" + "\n".join(
            f"- {point}" for point in draft.key_points
        )
        messages = self._prompts.get("quiz").render(
            request=self._request_block(run.request),
            lesson=escape_user_text(lesson),
            question_count=str(count),
        )
        step = StructuredStep(
            f"quiz:{index}", QuizDraft, QUIZ_MAX_TOKENS, schema=_quiz_schema(count)
        )
        return await self._generate_reviewed(
            run,
            f"quiz:{index}",
            step,
            messages,
            lambda quiz: reviewer.review_quiz(quiz, question_count=count),
        )

    async def _generate_reviewed(
        self,
        run: _Run,
        name: str,
        step: StructuredStep[T],
        messages: tuple[ChatMessage, ...],
        review: Callable[[T], list[str]],
    ) -> T:
        value = await self._run_step(run, name, step, messages)
        problems = review(value)
        rewrites = 0
        while problems and rewrites < MAX_REWRITES:
            rewrites += 1
            # Each rewrite quotes the latest reply and its findings, not the earlier rounds,
            # so the prompt stays within a small model's context window.
            correction = with_correction(
                messages, value.model_dump_json(), problems, self._prompts.get("repair")
            )
            step_name = f"{name}:rewrite" if rewrites == 1 else f"{name}:rewrite{rewrites}"
            with span(f"rewrite {rewrites}", SpanKind.REPAIR, {"problems": len(problems)}):
                value = await self._run_step(run, step_name, step, correction)
            problems = review(value)

        if problems:
            raise InvalidModelOutputError(
                f"The reviewer rejected step {name} after {MAX_REWRITES} rewrites "
                f"({'; '.join(problems[:3])}). Retry the request marked as a retry "
                "(`is_retry`, or `--retry` on the command line) so the model samples "
                "differently, or use a stronger model.",
                step=name,
                problems=problems,
            )
        return value

    async def _run_step(
        self, run: _Run, name: str, step: StructuredStep[T], messages: tuple[ChatMessage, ...]
    ) -> T:
        output = await run_step(
            self._gateway,
            step,
            messages,
            repair_prompt=self._prompts.get("repair"),
            context=run.context(name),
        )
        run.replies.extend(output.replies)
        return output.value

    async def _timed(self, run: _Run, name: str, work: Callable[[], Awaitable[R]]) -> R:
        started_at = datetime.now(UTC)
        with span(name, SpanKind.STEP) as step:
            try:
                return await work()
            finally:
                finished_at = datetime.now(UTC)
                span_id = step.span_id or None
                run.steps.append(StepRecord(name, started_at, finished_at, span_id, step.parent_id))

    @staticmethod
    def _request_block(request: GenerationRequest) -> str:
        lines = [
            f"<subject>{escape_user_text(request.subject_name)}</subject>",
            f"<topic>{escape_user_text(request.topic_name)}</topic>",
            f"<language>{request.language}</language>",
        ]
        if request.audience:
            lines.append(f"<audience>{escape_user_text(request.audience)}</audience>")
        return "\n".join(lines)


def _quiz_schema(count: int) -> dict[str, Any]:
    """Return QuizDraft's schema with the question count fixed, so grammars enforce it."""
    schema: dict[str, Any] = copy.deepcopy(QuizDraft.model_json_schema())
    questions = schema["properties"]["questions"]
    questions["minItems"] = count
    questions["maxItems"] = count
    return schema
