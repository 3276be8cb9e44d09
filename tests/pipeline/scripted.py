"""A provider that returns prepared replies, and valid documents to script them with.

It replaces the model in tests of pipeline logic (repairs, reviewer rewrites),
behind the real gateway and key pool. Over-the-wire behaviour is tested against
the simulator instead.
"""

from __future__ import annotations

import json
from collections import deque
from typing import Any

from microtopic.config import GatewayConfig, KeyConfig, ProviderKind
from microtopic.gateway import Gateway
from microtopic.keypool import KeyPool, PooledKey
from microtopic.providers.base import ChatRequest, ChatResult, PassthroughRequest


class ScriptedProvider:
    """Returns the next reply prepared for the request's schema and keeps every request."""

    def __init__(self, replies: dict[str, list[str]]) -> None:
        self._replies = {schema: deque(contents) for schema, contents in replies.items()}
        self.requests: list[ChatRequest] = []

    def requests_for(self, schema_name: str) -> list[ChatRequest]:
        return [request for request in self.requests if request.schema_name == schema_name]

    async def complete(self, request: ChatRequest, *, timeout_s: float) -> ChatResult:
        self.requests.append(request)
        queue = self._replies.get(request.schema_name)
        if not queue:
            raise AssertionError(f"no reply is left for a {request.schema_name} request")
        return ChatResult(
            content=queue.popleft(),
            model="scripted",
            prompt_tokens=11,
            completion_tokens=22,
            finish_reason="stop",
        )

    def admission_tokens(self, request: ChatRequest) -> int:
        return request.max_tokens

    async def check(self, *, timeout_s: float) -> None:
        return None

    async def forward(self, request: PassthroughRequest, *, timeout_s: float) -> ChatResult:
        raise AssertionError("the pipeline does not forward raw requests")

    async def aclose(self) -> None:
        return None


def scripted_gateway(provider: ScriptedProvider) -> Gateway:
    """Return a gateway whose only key is served by `provider`."""
    key = PooledKey(
        config=KeyConfig(name="scripted", provider=ProviderKind.LOCAL), provider=provider
    )
    return Gateway(KeyPool([key]), GatewayConfig())


def plan_json(*titles: str) -> str:
    microtopics = [{"title": title, "summary": f"What {title} means."} for title in titles]
    return json.dumps({"microtopics": microtopics})


def draft_json(title: str, **changes: Any) -> str:
    draft = {
        "title": title,
        "summary": f"{title} in one sentence.",
        "explanation": f"{title} explained over a few paragraphs with an example.",
        "key_points": [f"{title}: first idea", f"{title}: second idea", f"{title}: third idea"],
        "worked_example": "1. Read the problem.\n2. Apply the idea.\n3. Check the answer.",
        "misconceptions": [f"{title} is not about memorising rules."],
        "estimated_minutes": 5,
        **changes,
    }
    return json.dumps(draft)


def quiz_json(count: int, **changes: Any) -> str:
    questions = [
        {
            "question": f"Question {number}?",
            "options": ["First", "Second", "Third", "Fourth"],
            "answer_index": number % 4,
            "explanation": f"Option {number % 4 + 1} follows from the lesson.",
        }
        for number in range(1, count + 1)
    ]
    return json.dumps({"questions": questions, **changes})
