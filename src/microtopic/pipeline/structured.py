"""One LLM step that must return a document of a given pydantic type.

The reply is unwrapped from Markdown code fences, parsed and validated. When it
does not validate, the model gets one repair attempt that lists the problems;
a second failure raises `InvalidModelOutputError`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ValidationError

from microtopic.errors import InvalidModelOutputError
from microtopic.gateway import CallContext, Gateway, GatewayResult
from microtopic.observability.tracing import SpanKind, span
from microtopic.pipeline.prompts import PromptTemplate
from microtopic.providers.base import ChatMessage, ChatRequest

T = TypeVar("T", bound=BaseModel)

MAX_PROBLEMS_SHOWN = 10
_FENCE = re.compile(r"^\s*```[A-Za-z]*\s*\n(.*?)\n?\s*```\s*$", re.DOTALL)


@dataclass
class StepOutput(Generic[T]):
    """A validated document and every gateway reply it took."""

    value: T
    replies: list[GatewayResult] = field(default_factory=list)


class OutputProblems(Exception):
    """Raised inside this module when a reply fails parsing, validation or a rule."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class StructuredStep(Generic[T]):
    """What one step asks for: the output type, its schema and its limits."""

    name: str
    output_type: type[T]
    max_tokens: int
    temperature: float = 0.7
    schema: dict[str, Any] | None = None

    @property
    def json_schema(self) -> dict[str, Any]:
        return self.schema if self.schema is not None else self.output_type.model_json_schema()


async def run_step(
    gateway: Gateway,
    step: StructuredStep[T],
    messages: tuple[ChatMessage, ...],
    *,
    repair_prompt: PromptTemplate,
    context: CallContext,
) -> StepOutput[T]:
    """Return the validated output of `step`, repairing it once if needed."""
    first = await _call(gateway, step, messages, context)
    try:
        return StepOutput(_validated(step, first.result.content), [first])
    except OutputProblems as exc:
        problems = exc.problems

    with span("repair", SpanKind.REPAIR, {"problems": len(problems)}):
        repair_messages = with_correction(messages, first.result.content, problems, repair_prompt)
        repair_context = context.for_step(f"{context.step}:repair")
        second = await _call(gateway, step, repair_messages, repair_context)
        try:
            return StepOutput(_validated(step, second.result.content), [first, second])
        except OutputProblems as exc:
            raise InvalidModelOutputError(
                f"The model's output for step {context.step} was still invalid after one "
                f"repair ({'; '.join(exc.problems[:3])}). Retry the request marked as a retry "
                "(`is_retry`, or `--retry` on the command line), or use a stronger model.",
                step=context.step,
                problems=exc.problems,
            ) from None


def _validated(step: StructuredStep[T], content: str) -> T:
    """Return `parse_output` of the reply, timed in the trace with its count of problems."""
    with span("validate reply", SpanKind.VALIDATION) as validating:
        try:
            return parse_output(step, content)
        except OutputProblems as exc:
            problems = exc.problems
            validating.set("problems", len(problems))
    raise OutputProblems(problems)


async def _call(
    gateway: Gateway,
    step: StructuredStep[T],
    messages: tuple[ChatMessage, ...],
    context: CallContext,
) -> GatewayResult:
    request = ChatRequest(
        messages=messages,
        schema_name=step.output_type.__name__,
        json_schema=step.json_schema,
        max_tokens=step.max_tokens,
        temperature=step.temperature,
        # A user's retry must not repeat the sampling of the attempt that failed.
        sampling_nonce=context.request_id if context.is_retry else None,
    )
    return await gateway.complete(request, context)


def parse_output(step: StructuredStep[T], content: str) -> T:
    """Parse and validate a reply; raise `OutputProblems` listing what is wrong."""
    data = _load_json(unwrap_code_fence(content))
    try:
        return step.output_type.model_validate(data)
    except ValidationError as exc:
        raise OutputProblems(describe_validation_error(exc)) from None


def with_correction(
    messages: tuple[ChatMessage, ...],
    previous_reply: str,
    problems: list[str],
    repair_prompt: PromptTemplate,
) -> tuple[ChatMessage, ...]:
    """Return `messages` followed by the previous reply and a request to fix `problems`."""
    correction = repair_prompt.render(problems=_as_list(problems))[1]
    return (*messages, ChatMessage("assistant", previous_reply), correction)


def unwrap_code_fence(content: str) -> str:
    """Return the inside of a reply wrapped in one Markdown code fence, else the reply."""
    match = _FENCE.match(content)
    return match.group(1) if match else content


def _load_json(text: str) -> Any:
    try:
        # strict=False admits raw newlines inside strings, which small models emit.
        return json.loads(text, strict=False)
    except json.JSONDecodeError as exc:
        raise OutputProblems(
            [f"the reply is not valid JSON ({exc.msg} at char {exc.pos})"]
        ) from None


def describe_validation_error(exc: ValidationError) -> list[str]:
    """Return one sentence per error, naming the field and never quoting the input."""
    problems = []
    for error in exc.errors(include_input=False, include_url=False)[:MAX_PROBLEMS_SHOWN]:
        location = ".".join(str(part) for part in error["loc"]) or "the document"
        problems.append(f"{location}: {error['msg']}")
    return problems


def _as_list(problems: list[str]) -> str:
    return "\n".join(f"- {problem}" for problem in problems)
