"""The control API under `/_simulator/`: inject faults, read the counters, reset.

- `PUT /_simulator/keys/{name}/fault` with a `Fault` body, for example
  `{"kind": "rate_limit", "retry_after_ms": 1500, "count": 2}`;
- `GET /_simulator/stats`: for each key the calls by outcome, the 429s of its quota
  and of injected faults, and its quota windows with their peaks; totals include
  calls with unknown keys;
- `POST /_simulator/reset`: clear every fault, counter and quota window.

The API needs no key: the simulator is a local test tool and listens on 127.0.0.1 by default.
"""

from __future__ import annotations

import json
import logging

from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from microtopic.simulator.faults import Fault
from microtopic.simulator.state import SimulatorState

logger = logging.getLogger(__name__)


def control_routes(state: SimulatorState) -> list[Route]:
    """Return the routes of the control API, acting on `state`."""
    control = _Control(state)
    return [
        Route("/_simulator/keys/{name}/fault", control.put_fault, methods=["PUT"]),
        Route("/_simulator/stats", control.get_stats, methods=["GET"]),
        Route("/_simulator/reset", control.reset, methods=["POST"]),
    ]


class _Control:
    def __init__(self, state: SimulatorState) -> None:
        self._state = state

    async def put_fault(self, request: Request) -> Response:
        key_name = request.path_params["name"]
        if not self._state.has_key(key_name):
            message = f"No key is named {key_name!r}. Use a key name from the simulator config."
            return _error(404, "KeyNotFound", message)

        try:
            fault = Fault.model_validate(json.loads(await request.body()))
        except ValueError as exc:
            return _error(400, "InvalidFault", _describe_invalid_fault(exc))

        self._state.set_fault(key_name, fault)
        logger.info("Set the fault of key %s to %s (count %s)", key_name, fault.kind, fault.count)
        return JSONResponse({"key": key_name, "fault": fault.model_dump(mode="json")})

    async def get_stats(self, request: Request) -> Response:
        return JSONResponse(self._state.stats())

    async def reset(self, request: Request) -> Response:
        self._state.reset()
        logger.info("Cleared every fault, counter and quota window of the simulator")
        return JSONResponse(self._state.stats())


def _describe_invalid_fault(exc: ValueError) -> str:
    if not isinstance(exc, ValidationError):
        return 'The fault is not valid JSON. Send an object such as {"kind": "rate_limit"}.'
    problems = []
    for error in exc.errors(include_input=False, include_url=False):
        location = ".".join(str(part) for part in error["loc"]) or "body"
        problems.append(f"{location}: {error['msg']}")
    return f"Invalid fault: {'; '.join(problems)}."


def _error(status_code: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status_code)
