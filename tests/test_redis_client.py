"""Every redis-py error becomes a `RedisUnavailableError` that quotes none of its text."""

from __future__ import annotations

import inspect
from urllib.parse import urlsplit, urlunsplit

import pytest
import redis.asyncio
from redis import exceptions as redis_exc

from microtopic.errors import RedisUnavailableError
from microtopic.redis_client import TRANSLATED_ERRORS, redis_errors

BACKEND = "Redis at cache.example:6379"
RAW_TEXT = "raw redis text: AUTH hunter2 on key microtopic:cache:topic:abc"


def redis_errors_classes() -> list[type[Exception]]:
    return [
        error_class
        for _, error_class in inspect.getmembers(redis_exc, inspect.isclass)
        if issubclass(error_class, redis_exc.RedisError)
    ]


def make_error(error_class: type[Exception]) -> Exception:
    """Return an instance of `error_class` whose message must not leak into ours."""
    if issubclass(error_class, redis_exc.AskError):
        # Cluster redirections parse their message as "SLOT HOST:PORT".
        return error_class("3999 hunter2.example:6381")
    return error_class(RAW_TEXT)


@pytest.mark.parametrize(
    "error_class",
    [*redis_errors_classes(), TimeoutError, ConnectionRefusedError, OSError],
    ids=lambda cls: cls.__name__,
)
def test_redis_error_becomes_redis_unavailable(error_class: type[Exception]) -> None:
    error = make_error(error_class)

    with pytest.raises(RedisUnavailableError) as raised, redis_errors(BACKEND, "read a topic"):
        raise error

    message = raised.value.message
    assert raised.value.__cause__ is error
    assert raised.value.code == "redis_unavailable"
    assert raised.value.backend == BACKEND
    assert message.startswith(f"Could not read a topic: {BACKEND} ")
    assert f"({error_class.__name__})" in message
    assert "raw redis text" not in message
    assert "hunter2" not in message


@pytest.mark.parametrize(
    "error_class",
    [
        redis_exc.ConnectionError,
        redis_exc.TimeoutError,
        redis_exc.AuthenticationError,
        redis_exc.ResponseError,
        redis_exc.OutOfMemoryError,
        redis_exc.BusyLoadingError,
    ],
    ids=lambda cls: cls.__name__,
)
def test_common_redis_error_has_own_message(error_class: type[Exception]) -> None:
    assert error_class in TRANSLATED_ERRORS


def test_authentication_failure_names_credentials() -> None:
    with pytest.raises(RedisUnavailableError) as raised, redis_errors(BACKEND, "read a topic"):
        raise redis_exc.AuthenticationError(RAW_TEXT)

    assert "rejected the credentials" in raised.value.message
    assert "password in `redis_url`" in raised.value.message


def test_other_error_passes_through() -> None:
    with pytest.raises(KeyError), redis_errors(BACKEND, "read a topic"):
        raise KeyError("not a Redis error")


async def test_bad_db_index_names_setting(redis_url: str) -> None:
    url = urlunsplit(urlsplit(redis_url)._replace(path="/99"))
    client = redis.asyncio.Redis.from_url(url)

    try:
        with pytest.raises(RedisUnavailableError) as raised, redis_errors(BACKEND, "read a topic"):
            await client.ping()
    finally:
        await client.aclose()

    message = raised.value.message
    assert "has no database with the index in `redis_url`" in message
    assert "bug in Microtopic" not in message
