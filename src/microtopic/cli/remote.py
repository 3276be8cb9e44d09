"""Calls from the command line to a running service's routes (`--server URL`).

A `--server` URL may carry a user and password (`http://user:pass@host`), which
httpx sends as basic authentication. Messages name the server through
`describe_server`, which leaves them out.
"""

from __future__ import annotations

from typing import TypeVar
from urllib.parse import SplitResult, urlsplit, urlunsplit

import httpx
import typer
from pydantic import BaseModel, ValidationError

from microtopic.errors import ServiceResponseError, ServiceUnreachableError

T = TypeVar("T", bound=BaseModel)

DEFAULT_SERVER = "http://127.0.0.1:8001"


def check_server_url(server: str | None) -> str | None:
    """Validate a `--server` option: an http or https URL with a host and a valid port."""
    if server is None:
        return None
    parts = urlsplit(server)
    if parts.scheme not in ("http", "https"):
        found = f", not {parts.scheme}://" if parts.scheme else ""
        raise typer.BadParameter(
            f"must start with http:// or https://, as in {DEFAULT_SERVER}{found}"
        )
    if not parts.hostname or not _has_valid_port(parts):
        raise typer.BadParameter(
            f"must name a host and, if any, a port from 0 to 65535, as in {DEFAULT_SERVER}, "
            f"not {describe_server(server)}"
        )
    return server


def describe_server(url: str) -> str:
    """Return `url` without the user and password it may carry, for messages."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


def _has_valid_port(parts: SplitResult) -> bool:
    try:
        _ = parts.port
    except ValueError:
        return False
    return True


async def call_service(
    method: str, server: str, path: str, response_model: type[T], *, timeout_s: float
) -> T:
    """Send `method path` to the service at `server` and return its validated reply.

    Raises `ServiceUnreachableError` when nothing responds there in time, and
    `ServiceResponseError`, with the service's error code, when the response is
    an error or not the expected reply.
    """
    url = server.rstrip("/") + path
    display_server = describe_server(server)
    try:
        async with httpx.AsyncClient(timeout=timeout_s) as client:
            response = await client.request(method, url)
    except httpx.TimeoutException:
        raise ServiceUnreachableError(
            f"The service at {display_server} did not respond to {method} {path} within "
            f"{timeout_s:g} s. Check that it is not overloaded, then retry.",
            url=describe_server(url),
        ) from None
    except httpx.HTTPError as exc:
        raise ServiceUnreachableError(
            f"No Microtopic service responds at {display_server} ({type(exc).__name__}). Start one "
            "with `microtopic serve`, or pass --server with the URL of a running one.",
            url=describe_server(url),
        ) from None
    if not response.is_success:
        raise response_error(response, server, url)
    try:
        return response_model.model_validate_json(response.content)
    except ValidationError:
        raise ServiceResponseError(
            f"The server at {display_server} returned something other than Microtopic's reply to "
            f"{method} {path}. Check that --server points at a Microtopic service.",
            url=describe_server(url),
            status_code=response.status_code,
        ) from None


def response_error(response: httpx.Response, server: str, url: str) -> ServiceResponseError:
    """Return the error for a response that is not a success, with the service's code if any."""
    server, url = describe_server(server), describe_server(url)
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
