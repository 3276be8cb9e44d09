from __future__ import annotations

import inspect

import pytest
from sqlalchemy import exc as sa_exc

from microtopic.errors import StorageError
from microtopic.storage.errors import (
    TRANSLATED_ERRORS,
    mask_url,
    storage_errors,
    translate_storage_error,
)

URL = "postgresql+asyncpg://writer:hunter2@db.example/microtopic"
RAW_TEXT = "raw driver text: relation secret_table, value hunter2"


def make_error(error_class: type[Exception]) -> Exception:
    """Return an instance of `error_class` whose own message is RAW_TEXT."""
    if issubclass(error_class, sa_exc.DBAPIError):
        return error_class(f"SELECT {RAW_TEXT}", {"value": RAW_TEXT}, Exception(RAW_TEXT))
    if issubclass(error_class, sa_exc.StatementError):
        return error_class(RAW_TEXT, f"SELECT {RAW_TEXT}", {"value": RAW_TEXT}, None)
    return error_class(RAW_TEXT)


def sqlalchemy_dbapi_errors() -> list[type[Exception]]:
    return [
        error_class
        for _, error_class in inspect.getmembers(sa_exc, inspect.isclass)
        if issubclass(error_class, sa_exc.DBAPIError)
    ]


@pytest.mark.parametrize("error_class", TRANSLATED_ERRORS, ids=lambda cls: cls.__name__)
def test_mapped_error_becomes_storage_error(error_class: type[Exception]) -> None:
    error = make_error(error_class)

    with pytest.raises(StorageError) as raised, storage_errors(URL, "read the topics"):
        raise error

    message = raised.value.message
    assert raised.value.__cause__ is error
    assert message.startswith("Could not read the topics: the database at ")
    assert f"({error_class.__name__})" in message
    assert "raw driver text" not in message
    assert "secret_table" not in message
    assert "hunter2" not in message


@pytest.mark.parametrize("error_class", sqlalchemy_dbapi_errors(), ids=lambda cls: cls.__name__)
def test_every_dbapi_error_has_own_message(error_class: type[Exception]) -> None:
    assert error_class in TRANSLATED_ERRORS


def test_pool_timeout_message_advises_retry() -> None:
    error = sa_exc.TimeoutError("QueuePool limit of size 5 overflow 10 reached")

    translated = translate_storage_error(error, url=URL, action="count the generated topics")

    assert "no free pooled connection" in translated.message
    assert "Retry later" in translated.message


def test_operational_error_names_settings() -> None:
    error = make_error(sa_exc.OperationalError)

    translated = translate_storage_error(error, url=URL, action="start generation request 1")

    assert "Check the `database_url` setting," in translated.message
    assert "microtopic db upgrade" in translated.message


def test_operational_error_names_given_setting() -> None:
    error = make_error(sa_exc.OperationalError)

    translated = translate_storage_error(
        error, url=URL, action="start generation request 1", setting="MICROTOPIC_DATABASE_URL"
    )

    assert "Check MICROTOPIC_DATABASE_URL," in translated.message


def test_builtin_timeout_says_no_response() -> None:
    translated = translate_storage_error(TimeoutError(), url=URL, action="read the topics")

    assert "did not respond in time" in translated.message


def test_unrelated_error_passes_through() -> None:
    with pytest.raises(ValueError, match="not a database error"), storage_errors(URL, "x"):
        raise ValueError("not a database error")


def test_mask_url_hides_password() -> None:
    masked = mask_url(URL)

    assert masked == "postgresql+asyncpg://writer:***@db.example/microtopic"


def test_mask_url_keeps_url_without_password() -> None:
    masked = mask_url("sqlite+aiosqlite:///./microtopic.db")

    assert masked == "sqlite+aiosqlite:///./microtopic.db"
