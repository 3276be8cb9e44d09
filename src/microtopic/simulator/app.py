"""The simulator's ASGI app: Azure OpenAI and OpenAI chat completions, and the control API.

Routes:

- `POST /openai/deployments/{deployment}/chat/completions?api-version=...`, Azure's
  route, authenticated by the `api-key` header or `Authorization: Bearer KEY`;
- `POST /v1/chat/completions`, OpenAI's route, authenticated by `Authorization: Bearer
  KEY`, with the model named in the body;
- `/_simulator/...`, the control API of `microtopic.simulator.control`.

A chat call is checked in this order: the key (401), an error fault (see
`microtopic.simulator.faults`), the `api-version` (400, Azure only), the body (400),
the deployment (404), the `response_format` schema (400) and the key's quotas (429).
A call that passes is admitted and charged, may get a reply fault, and waits its
latency before its 200 reply. Every other response is sent at once and consumes no
quota.

Responses to a key with quotas carry `x-ratelimit-*` headers. Those of a 200 reply
describe the windows right after its admission, and the others the windows when the
response is built.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from microtopic.simulator import responses
from microtopic.simulator.chat import ChatCompletionBody, Reply, shape_reply, write_reply
from microtopic.simulator.config import SimulatedKey, SimulatorConfig
from microtopic.simulator.content import UnsupportedSchemaError
from microtopic.simulator.control import control_routes
from microtopic.simulator.faults import ERROR_FAULT_KINDS, REPLY_FAULT_KINDS, Fault, FaultKind
from microtopic.simulator.interruptions import (
    DroppedConnectionResponse,
    HangingResponse,
    InterruptingResponse,
    Outcome,
)
from microtopic.simulator.responses import Dialect
from microtopic.simulator.state import SimulatorState
from microtopic.tokens import admission_tokens, encoding, prompt_tokens

logger = logging.getLogger(__name__)

MAX_BODY_SIZE_BYTES = 16 * 1024 * 1024

# The error faults whose response depends only on the route's wire format.
_PLAIN_FAULT_RESPONSES: dict[FaultKind, Callable[[Dialect], Response]] = {
    FaultKind.SERVER_ERROR: responses.server_error_response,
    FaultKind.SERVICE_UNAVAILABLE: responses.service_unavailable_response,
    FaultKind.INSUFFICIENT_QUOTA: responses.insufficient_quota_response,
    FaultKind.REVOKED: responses.invalid_key_response,
}


def create_simulator_app(
    config: SimulatorConfig, *, monotonic: Callable[[], float] = time.monotonic
) -> Starlette:
    """Create the simulator's ASGI app with fresh state for the keys of `config`.

    `monotonic` is the real clock in seconds that simulated time is derived from. Tests
    pass a clock they move by hand.
    """
    # The token table takes about half a second to load: loaded on the first call, it
    # would delay that call's admission and every call queued behind it.
    encoding()
    state = SimulatorState(config, monotonic=monotonic)
    chat = _ChatCompletions(config, state)
    routes = [
        Route(
            "/openai/deployments/{deployment}/chat/completions",
            chat.azure,
            methods=["POST"],
        ),
        Route("/v1/chat/completions", chat.openai, methods=["POST"]),
        *control_routes(state),
    ]
    return Starlette(
        routes=routes,
        exception_handlers={HTTPException: _http_error},
        max_body_size=MAX_BODY_SIZE_BYTES,
    )


async def _http_error(request: Request, exc: Exception) -> Response:
    # Starlette raises HTTPException for an unknown path (404), a wrong method (405) and a
    # body over MAX_BODY_SIZE_BYTES (413).
    if not isinstance(exc, HTTPException):
        raise exc
    return responses.http_error_response(exc.status_code, exc.detail)


@dataclass(frozen=True)
class _Call:
    """A chat call whose key, route and body are valid, ready to be admitted."""

    dialect: Dialect
    key: SimulatedKey
    api_version: str
    deployment: str
    body: ChatCompletionBody
    raw_body: dict[str, Any]


class _ChatCompletions:
    """The two chat-completions endpoints, sharing keys, faults, quotas and counters."""

    def __init__(self, config: SimulatorConfig, state: SimulatorState) -> None:
        self._config = config
        self._state = state
        self._keys_by_secret = {key.secret.get_secret_value(): key for key in config.keys}

    async def azure(self, request: Request) -> Response:
        deployment = request.path_params["deployment"]
        return await self._serve(request, Dialect.AZURE, deployment)

    async def openai(self, request: Request) -> Response:
        return await self._serve(request, Dialect.OPENAI, deployment=None)

    async def _serve(self, request: Request, dialect: Dialect, deployment: str | None) -> Response:
        request_id = str(uuid.uuid4())
        key = self._authenticate(request, dialect)
        key_name = key.name if key else None

        response = await self._respond(request, dialect, key, deployment)

        if key_name is not None:
            for name, value in self._state.rate_limit_headers(key_name).items():
                response.headers.setdefault(name, value)
        response.headers["x-request-id"] = request_id
        response.headers["apim-request-id"] = request_id

        record = functools.partial(self._record, request_id, key_name)
        if isinstance(response, InterruptingResponse):
            response.report_to(record)
        else:
            record(response.status_code)
        return response

    def _record(self, request_id: str, key_name: str | None, outcome: Outcome) -> None:
        self._state.record(key_name, outcome)
        logger.debug(
            "Request %s with key %s ended with %s", request_id, key_name or "(unknown)", outcome
        )

    def _authenticate(self, request: Request, dialect: Dialect) -> SimulatedKey | None:
        secret = None
        if dialect is Dialect.AZURE:
            secret = request.headers.get("api-key")
        if secret is None:
            scheme, _, token = request.headers.get("authorization", "").partition(" ")
            secret = token.strip() if scheme.lower() == "bearer" else None
        return self._keys_by_secret.get(secret) if secret else None

    async def _respond(
        self,
        request: Request,
        dialect: Dialect,
        key: SimulatedKey | None,
        deployment: str | None,
    ) -> Response:
        if key is None:
            return responses.invalid_key_response(dialect)

        api_version = request.query_params.get("api-version", "")
        fault = self._state.take_fault(key.name, ERROR_FAULT_KINDS)
        if fault is not None:
            return self._fault_response(dialect, fault, api_version, deployment)
        if dialect is Dialect.AZURE and not api_version:
            return responses.missing_api_version_response()

        parsed = await _read_body(request, dialect)
        if isinstance(parsed, Response):
            return parsed
        body, raw_body = parsed
        deployment = deployment or body.model
        if not deployment:
            message = "The `model` field is missing. Name the model to call."
            return responses.bad_request_response(dialect, message, param="model")
        if not key.allows(deployment):
            return responses.deployment_not_found_response(dialect, deployment)

        call = _Call(dialect, key, api_version, deployment, body, raw_body)
        return await self._complete(call)

    async def _complete(self, call: _Call) -> Response:
        max_output_tokens = call.body.max_output_tokens(self._config.default_max_tokens)
        # A call is admitted as of now, when its body has been read: writing the reply
        # first takes a varying few milliseconds, and Azure counts a call from arrival.
        arrived_s = self._state.clock.now_s()
        try:
            content = write_reply(call.body, self._rng_for_call())
        except UnsupportedSchemaError as exc:
            message = f"The simulator cannot fill the response_format schema: {exc}."
            return responses.bad_request_response(call.dialect, message, param="response_format")

        rejected = self._admit(call, max_output_tokens, arrived_s)
        if rejected is not None:
            return rejected
        rate_limit_headers = self._state.rate_limit_headers(call.key.name)

        fault = self._state.take_fault(call.key.name, REPLY_FAULT_KINDS)
        reply = shape_reply(content, fault, max_output_tokens)
        delay_s = self._state.draw_latency_s(reply.completion_tokens)
        if delay_s > 0:
            await asyncio.sleep(delay_s)

        response = responses.completion_response(
            call.dialect,
            model=self._config.model_name(call.deployment),
            reply=reply,
            prompt_tokens=prompt_tokens(
                call.raw_body["messages"], call.raw_body.get("response_format")
            ),
        )
        response.headers.update(rate_limit_headers)
        response.headers["x-simulator-latency-ms"] = f"{delay_s * 1000:.3f}"
        return response

    def _admit(self, call: _Call, max_output_tokens: int, arrived_s: float) -> Response | None:
        charge_tokens = admission_tokens(
            call.raw_body["messages"], call.raw_body.get("response_format"), max_output_tokens
        )
        rejection = self._state.admit(call.key.name, charge_tokens, arrived_s)
        if rejection is None:
            return None

        logger.debug(
            "Rejected a call of %d tokens with key %s: over its %s quota",
            charge_tokens,
            call.key.name,
            " and ".join(rejection.exceeded),
        )
        wait_s = rejection.wait_s
        return responses.quota_exceeded_response(
            call.dialect,
            rejection,
            self._state.quota(call.key.name),
            api_version=call.api_version,
            retry_after_s=None if wait_s is None else self._state.clock.real_s(wait_s),
        )

    def _fault_response(
        self, dialect: Dialect, fault: Fault, api_version: str, deployment: str | None
    ) -> Response:
        logger.debug("Injected a %s fault", fault.kind)
        plain = _PLAIN_FAULT_RESPONSES.get(fault.kind)
        if plain is not None:
            return plain(dialect)
        if fault.kind is FaultKind.RATE_LIMIT:
            return responses.rate_limited_response(dialect, fault, api_version=api_version)
        if fault.kind is FaultKind.CONTENT_FILTER_PROMPT:
            return responses.content_filter_prompt_response(dialect, fault.category)
        if fault.kind is FaultKind.HANG:
            timeout = responses.request_timeout_response(dialect, self._config.hang_s)
            return HangingResponse(timeout, self._config.hang_s)
        if fault.kind is FaultKind.CONNECTION_RESET:
            # The body is never read, so the cut-off reply is an empty completion.
            full = responses.completion_response(
                dialect,
                model=self._config.model_name(deployment or "unknown"),
                reply=Reply(content="", finish_reason="stop", completion_tokens=0),
                prompt_tokens=0,
            )
            return DroppedConnectionResponse(full)
        raise ValueError(f"The fault kind {fault.kind} has no error response.")

    def _rng_for_call(self) -> random.Random:
        if self._config.seed is None:
            return random.Random()
        # One generator per completion, so that concurrent calls do not share its state.
        number = self._state.next_completion_number()
        return random.Random(f"{self._config.seed}:{number}")


async def _read_body(
    request: Request, dialect: Dialect
) -> tuple[ChatCompletionBody, dict[str, Any]] | Response:
    # The raw JSON is kept because token counts must match what the client computed
    # from the body it sent, which a dump of the validated model could change.
    try:
        raw = json.loads(await request.body())
    except ValueError:
        message = "The request body is not valid JSON. Send a JSON object."
        return responses.bad_request_response(dialect, message, param=None)

    try:
        body = ChatCompletionBody.model_validate(raw)
    except ValidationError as exc:
        error = exc.errors(include_input=False, include_url=False)[0]
        param = ".".join(str(part) for part in error["loc"]) or None
        message = f"Invalid request body at {param or 'the top level'}: {error['msg']}."
        return responses.bad_request_response(dialect, message, param=param)

    if body.stream:
        message = "Streaming is not supported by the simulator. Send `stream: false`."
        return responses.bad_request_response(dialect, message, param="stream")
    return body, raw
