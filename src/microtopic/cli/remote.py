"""Calls from the command line to a running service's routes (`--server URL`)."""

from __future__ import annotations

from typing import TypeVar

import httpx
from pydantic import BaseModel, ValidationError

from microtopic.errors import ServiceResponseError, ServiceUnreachableError

T = TypeVar("T", bound=BaseModel)

DEFAULT_SERVER = "http://127.0.0.1:8001"


async def call_service(
    method: str, server: str, path: str, response_model: type[T], *, timeout_s: float
) -> T:
    """Send `method path` to the service at `server` and return its validated reply.

    Raises `ServiceUnreachableError` when nothing responds there in time, and
    `ServiceResponseError`, with the service's error code, when the response is
    an error or not the expected reply.
    """
    url = server.rstrip("/") + path
    try:
        async with httpx.AsyncClient(timeout=timeout_s) as client:
            response = await client.request(method, url)
    except httpx.TimeoutException:
        raise ServiceUnreachableError(
            f"The service at {server} did not respond to {method} {path} within {timeout_s:g} s. "
            "Check that it is not overloaded, then retry.",
            url=url,
        ) from None
    except httpx.HTTPError as exc:
        raise ServiceUnreachableError(
            f"No Microtopic service responds at {server} ({type(exc).__name__}). Start one "
            "with `microtopic serve`, or pass --server with the URL of a running one.",
            url=url,
        ) from None
    if not response.is_success:
        raise response_error(response, server, url)
    try:
        return response_model.model_validate_json(response.content)
    except ValidationError:
        raise ServiceResponseError(
            f"The server at {server} returned something other than Microtopic's reply to "
            f"{method} {path}. Check that --server points at a Microtopic service.",
            url=url,
            status_code=response.status_code,
        ) from None


def response_error(response: httpx.Response, server: str, url: str) -> ServiceResponseError:
    status = response.status_code
    try:
        body = response.json()
        # Only Microtopic's error body, as api.errors builds it, is read for a code.
        if body["success"] is not False or "request_id" not in body:
            raise ValueError("not a Microtopic error body")
        code, message = str(body["error"]["code"]), str(body["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return ServiceResponseError(
            f"The server at {server} returned HTTP {status} without a Microtopic error. "
            "Check that --server points at a Microtopic service.",
            url=url,
            status_code=status,
        )
    return ServiceResponseError(
        f"The service at {server} returned HTTP {status}: {message}",
        url=url,
        status_code=status,
        code=code,
    )
