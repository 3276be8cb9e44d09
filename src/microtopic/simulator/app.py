"""The simulator's ASGI app: Azure OpenAI and OpenAI chat completions, and the control API.

Routes:

- `POST /openai/deployments/{deployment}/chat/completions?api-version=...`, Azure's
  route, authenticated by the `api-key` header or `Authorization: Bearer KEY`;
- `POST /v1/chat/completions`, OpenAI's route, authenticated by `Authorization: Bearer
  KEY`, with the model named in the body;
- `/_simulator/...`, the control API of `microtopic.simulator.control`.

A chat call is checked in this order: the key (401), the key's injected fault, the
`api-version` (400, Azure only), the body (400), the deployment (404). A fault
therefore applies to the next calls made with the key, whatever they contain. Only
successful calls wait `latency_s`: the errors are returned at once.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import uuid

from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from microtopic.simulator import responses
from microtopic.simulator.chat import ChatCompletionBody, write_reply
from microtopic.simulator.config import SimulatedKey, SimulatorConfig
from microtopic.simulator.content import UnsupportedSchemaError
from microtopic.simulator.control import control_routes
from microtopic.simulator.responses import Dialect
from microtopic.simulator.state import Fault, FaultKind, SimulatorState

logger = logging.getLogger(__name__)

MAX_BODY_SIZE_BYTES = 16 * 1024 * 1024


def create_simulator_app(config: SimulatorConfig) -> Starlette:
    """Create the simulator's ASGI app with fresh state for the keys of `config`."""
    state = SimulatorState(key.name for key in config.keys)
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


class _ChatCompletions:
    """The two chat-completions endpoints, sharing keys, faults and counters."""

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

        response = await self._respond(request, dialect, key, deployment)

        self._state.record(key.name if key else None, response.status_code)
        response.headers["x-request-id"] = request_id
        response.headers["apim-request-id"] = request_id
        logger.debug(
            "Request %s with key %s returned %d",
            request_id,
            key.name if key else "(unknown)",
            response.status_code,
        )
        return response

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
        fault = self._state.take_fault(key.name)
        if fault is not None:
            return _fault_response(dialect, fault, api_version)
        if dialect is Dialect.AZURE and not api_version:
            return responses.missing_api_version_response()

        body = await _read_body(request, dialect)
        if isinstance(body, Response):
            return body
        deployment = deployment or body.model
        if not deployment:
            message = "The `model` field is missing. Name the model to call."
            return responses.bad_request_response(dialect, message, param="model")
        if not key.allows(deployment):
            return responses.deployment_not_found_response(dialect, deployment)

        return await self._complete(dialect, body, deployment)

    async def _complete(
        self, dialect: Dialect, body: ChatCompletionBody, deployment: str
    ) -> Response:
        rng = self._rng_for_call()
        try:
            content = write_reply(body, rng)
        except UnsupportedSchemaError as exc:
            message = f"The simulator cannot fill the response_format schema: {exc}."
            return responses.bad_request_response(dialect, message, param="response_format")

        if self._config.latency_s > 0:
            await asyncio.sleep(self._config.latency_s)
        return responses.completion_response(
            dialect,
            model=self._config.model_name(deployment),
            content=content,
            prompt_text=body.prompt_text(),
        )

    def _rng_for_call(self) -> random.Random:
        if self._config.seed is None:
            return random.Random()
        # One generator per completion, so that concurrent calls do not share its state.
        number = self._state.next_completion_number()
        return random.Random(f"{self._config.seed}:{number}")


async def _read_body(request: Request, dialect: Dialect) -> ChatCompletionBody | Response:
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
    return body


def _fault_response(dialect: Dialect, fault: Fault, api_version: str) -> Response:
    if fault.kind is FaultKind.RATE_LIMIT:
        return responses.rate_limited_response(dialect, fault, api_version=api_version)
    if fault.kind is FaultKind.SERVER_ERROR:
        return responses.server_error_response(dialect)
    return responses.invalid_key_response(dialect)
