"""The Redis connection shared by the cache, the key pool and the job queue.

`connect` builds one client from the settings; the runtime owns it and closes it.
`redis_errors` is the one place where redis-py's exceptions become
`RedisUnavailableError`, whose message names what failed but never the URL,
which may carry a password.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import redis
import redis.asyncio

from microtopic.config import Settings
from microtopic.errors import RedisUnavailableError

# A command that has not answered by then is treated as an outage, not waited for.
SOCKET_TIMEOUT_S = 5.0


def connect(settings: Settings) -> redis.asyncio.Redis | None:
    """Return a client for `settings.redis_url`, or None when no Redis is configured.

    No connection is made until the first command.
    """
    if settings.redis_url is None:
        return None
    client: redis.asyncio.Redis = redis.asyncio.Redis.from_url(
        settings.redis_url.get_secret_value(),
        socket_timeout=SOCKET_TIMEOUT_S,
        socket_connect_timeout=SOCKET_TIMEOUT_S,
        health_check_interval=30,
    )
    return client


@contextmanager
def redis_errors(action: str) -> Iterator[None]:
    """Translate redis-py's errors raised inside the block into `RedisUnavailableError`.

    `action` says what was being done, as in "admit a call to key east".
    """
    try:
        yield
    except redis.RedisError as exc:
        raise RedisUnavailableError(_describe(exc, action)) from exc


def _describe(exc: redis.RedisError, action: str) -> str:
    # AuthenticationError is a ConnectionError in redis-py, so it is tested first.
    if isinstance(exc, redis.AuthenticationError | redis.exceptions.NoPermissionError):
        cause = "it refused the credentials in MICROTOPIC_REDIS_URL"
    elif isinstance(exc, redis.ConnectionError | redis.TimeoutError):
        cause = "it cannot be reached"
    elif isinstance(exc, redis.ResponseError):
        cause = "it refused the command"
    else:
        cause = f"the client failed ({type(exc).__name__})"
    return (
        f"Could not {action} in Redis: {cause}. Check MICROTOPIC_REDIS_URL and that Redis "
        "is running."
    )
