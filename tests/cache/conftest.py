"""Fixtures of the cache tests: a Redis URL that refuses connections."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest


@pytest.fixture
def closed_redis_url() -> Iterator[str]:
    """A Redis URL whose port refuses connections: bound here, but not listening."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        yield f"redis://:closed-port-password@127.0.0.1:{port}/0"
