"""Redis for the content cache, the shared key pool state and the job queue.

`connect` builds the client of the key pool and the job queue from the settings;
the runtime owns it and closes it. This module is also the one place where
redis-py's exceptions become `RedisUnavailableError`.

redis-py's messages can quote the host, commands and stored values, so none of
its text is copied: each message is written here, and the original exception
stays attached as `__cause__` for logs. Nothing here prints the URL, which may
carry a password; `describe_redis_url` names the server without it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit

import redis.asyncio
from redis import exceptions as redis_exc

from microtopic.config import Settings
from microtopic.errors import RedisUnavailableError

# A command with no response by then is treated as an outage, not waited for.
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


def describe_redis_url(url: str) -> str:
    """Return "Redis at HOST:PORT" (or at the socket path), never the password."""
    parts = urlsplit(url)
    if parts.scheme == "unix":
        return f"Redis at {parts.path}"
    host = parts.hostname or "localhost"
    return f"Redis at {host}:{parts.port or 6379}"


_CHECK_SERVER = "Check `redis_url` and that Redis is running."
_CHECK_ACCOUNT = "Check the user and password in `redis_url` and the user's permissions."
_CHECK_MEMORY = "Check the server's `maxmemory` and eviction policy."
_RETRY_LATER = "It should pass by itself; check the Redis server's log if it persists."
_REPORT_BUG = "This is a bug in Microtopic. Report it with the server log."
_CHECK_DB_INDEX = (
    "Check the database index at the end of `redis_url` (redis://HOST:PORT/DB): it must be "
    "below the server's `databases` setting, which is 16 by default."
)

# Order matters: subclasses come before their bases, and the builtin TimeoutError
# (which asyncio raises) before OSError, of which it is a subclass.
_TRANSLATIONS: tuple[tuple[type[Exception], str, str], ...] = (
    (redis_exc.AuthenticationError, "rejected the credentials", _CHECK_ACCOUNT),
    (redis_exc.AuthorizationError, "denied access", _CHECK_ACCOUNT),
    (redis_exc.NoPermissionError, "denied a command to this user", _CHECK_ACCOUNT),
    (redis_exc.BusyLoadingError, "is still loading its data set", _RETRY_LATER),
    (redis_exc.MaxConnectionsError, "has no free pooled connection", _RETRY_LATER),
    (redis_exc.ConnectionError, "could not be reached or dropped the connection", _CHECK_SERVER),
    (redis_exc.TimeoutError, "did not respond in time", _CHECK_SERVER),
    (redis_exc.OutOfMemoryError, "is out of memory", _CHECK_MEMORY),
    (redis_exc.ReadOnlyError, "is a read-only replica", _CHECK_SERVER),
    (redis_exc.ResponseError, "rejected a command", _REPORT_BUG),
    (redis_exc.DataError, "was sent a value it cannot take", _REPORT_BUG),
    (redis_exc.InvalidResponse, "sent a reply that could not be parsed", _CHECK_SERVER),
    (redis_exc.RedisError, "failed", _CHECK_SERVER),
    (TimeoutError, "did not respond in time", _CHECK_SERVER),
    (OSError, "could not be reached", _CHECK_SERVER),
)

TRANSLATED_ERRORS: tuple[type[Exception], ...] = tuple(error for error, _, _ in _TRANSLATIONS)
"""Every exception class `translate_redis_error` has a message for."""


def translate_redis_error(exc: Exception, *, backend: str, action: str) -> RedisUnavailableError:
    """Return the `RedisUnavailableError` for an error raised while doing `action`.

    `backend` names the server without its password, such as "Redis at
    127.0.0.1:6379". `action` completes the sentence "Could not ...", for example
    "read a cached topic". Raise the result `from exc` to keep the original for logs.
    """
    description, advice = _describe(exc)
    return RedisUnavailableError(
        f"Could not {action}: {backend} {description} ({type(exc).__name__}). {advice}",
        backend=backend,
    )


@contextmanager
def redis_errors(backend: str, action: str) -> Iterator[None]:
    """Raise a `RedisUnavailableError` in place of any Redis error raised inside the block."""
    try:
        yield
    except (redis_exc.RedisError, OSError) as exc:
        raise translate_redis_error(exc, backend=backend, action=action) from exc


def _describe(exc: Exception) -> tuple[str, str]:
    if _is_invalid_db_index(exc):
        return "has no database with the index in `redis_url`", _CHECK_DB_INDEX
    for error_class, description, advice in _TRANSLATIONS:
        if isinstance(exc, error_class):
            return description, advice
    return "failed", _REPORT_BUG


def _is_invalid_db_index(exc: Exception) -> bool:
    # redis-py sends SELECT while it connects, and Redis replies to a bad index with
    # "ERR DB index is out of range", which redis-py raises as a ResponseError.
    return isinstance(exc, redis_exc.ResponseError) and "db index" in str(exc).lower()
