"""One structured step: unwrapping, lenient parsing, validation and the single repair."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from microtopic.domain import TopicPlan
from microtopic.errors import InvalidModelOutputError
from microtopic.gateway import CallContext, CallEvent
from microtopic.pipeline.prompts import PromptLibrary
from microtopic.pipeline.structured import (
    StructuredStep,
    describe_validation_error,
    run_step,
    unwrap_code_fence,
)
from microtopic.providers.base import ChatMessage
from tests.pipeline.scripted import ScriptedProvider, plan_json, scripted_gateway

STEP = StructuredStep("plan", TopicPlan, max_tokens=400)
MESSAGES = (
    ChatMessage("system", "You plan lessons. Reply with JSON only."),
    ChatMessage("user", "Plan the topic <topic>Fractions</topic>."),
)
CONTEXT = CallContext(request_id="req-7", step="plan")
GOOD_PLAN = plan_json("Halves", "Thirds", "Quarters")
SHORT_PLAN = plan_json("Halves")


class StepRecorder:
    def __init__(self) -> None:
        self.steps: list[str] = []

    def on_call_completed(self, event: CallEvent) -> None:
        self.steps.append(event.context.step)

    def on_call_failed(self, event: CallEvent) -> None:
        self.steps.append(event.context.step)


async def run_plan(provider: ScriptedProvider) -> list[str]:
    """Run the plan step and return the context step of every call it made."""
    gateway = scripted_gateway(provider)
    recorder = StepRecorder()
    gateway.subscribe(recorder)
    repair = PromptLibrary.load_default().get("repair")
    await run_step(gateway, STEP, MESSAGES, repair_prompt=repair, context=CONTEXT)
    return recorder.steps


@pytest.mark.parametrize(
    "reply",
    [
        f"```json\n{GOOD_PLAN}\n```",
        f"```\n{GOOD_PLAN}\n```",
        f"  ```JSON\n{GOOD_PLAN}```  \n",
    ],
)
async def test_fenced_reply_needs_no_repair(reply: str) -> None:
    provider = ScriptedProvider({"TopicPlan": [reply]})
    repair = PromptLibrary.load_default().get("repair")

    output = await run_step(
        scripted_gateway(provider), STEP, MESSAGES, repair_prompt=repair, context=CONTEXT
    )

    assert [item.title for item in output.value.microtopics] == ["Halves", "Thirds", "Quarters"]
    assert len(output.replies) == 1
    assert len(provider.requests) == 1


async def test_raw_newline_in_string_is_accepted() -> None:
    reply = GOOD_PLAN.replace("What Halves means.", "What Halves\nmeans.")
    provider = ScriptedProvider({"TopicPlan": [reply]})

    steps = await run_plan(provider)

    assert steps == ["plan"]


async def test_request_carries_step_schema() -> None:
    provider = ScriptedProvider({"TopicPlan": [GOOD_PLAN]})

    await run_plan(provider)

    request = provider.requests[0]
    assert request.messages == MESSAGES
    assert request.schema_name == "TopicPlan"
    assert request.json_schema == TopicPlan.model_json_schema()
    assert request.max_tokens == 400


async def test_invalid_reply_gets_one_repair() -> None:
    provider = ScriptedProvider({"TopicPlan": [SHORT_PLAN, GOOD_PLAN]})

    steps = await run_plan(provider)

    repair_request = provider.requests[1]
    assistant, correction = repair_request.messages[-2:]
    assert steps == ["plan", "plan:repair"]
    assert repair_request.messages[:2] == MESSAGES
    assert assistant.role == "assistant"
    assert assistant.content == SHORT_PLAN
    assert correction.role == "user"
    assert "- microtopics: List should have at least 3 items" in correction.content


async def test_non_json_reply_is_repaired() -> None:
    provider = ScriptedProvider({"TopicPlan": ["Here is your plan: halves, thirds.", GOOD_PLAN]})

    steps = await run_plan(provider)

    correction = provider.requests[1].messages[-1]
    assert steps == ["plan", "plan:repair"]
    assert "the reply is not valid JSON" in correction.content


async def test_invalid_twice_raises_naming_step() -> None:
    provider = ScriptedProvider({"TopicPlan": [SHORT_PLAN, "{}"]})

    with pytest.raises(InvalidModelOutputError) as caught:
        await run_plan(provider)

    assert caught.value.step == "plan"
    assert "step plan" in caught.value.message
    assert caught.value.problems == ["microtopics: Field required"]
    assert len(provider.requests) == 2


def test_unfenced_reply_is_unchanged() -> None:
    reply = 'Before ```json\n{"a": 1}\n``` after'

    unwrapped = unwrap_code_fence(reply)

    assert unwrapped == reply


def test_problems_never_quote_input() -> None:
    secret_text = "sk-do-not-echo-" + "x" * 300
    with pytest.raises(ValidationError) as caught:
        TopicPlan.model_validate({"microtopics": [{"title": secret_text, "summary": 3}]})

    problems = describe_validation_error(caught.value)

    assert problems
    assert all(secret_text not in problem for problem in problems)
    assert any(problem.startswith("microtopics.0.title:") for problem in problems)
