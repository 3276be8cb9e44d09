"""Translate SQLAlchemy and database driver errors into `StorageError`, at this one boundary.

A driver's message can quote SQL, stored values and parts of the URL, so none of
its text is copied into the `StorageError`: each message is written here, and the
original exception stays attached as `__cause__` for logs.

Messages name the setting that gave the URL (`setting`), such as
"`database_url` in microtopic.yaml" or "MICROTOPIC_DATABASE_URL", so that the
user knows where to correct it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import URL, make_url

from microtopic.config import DATABASE_URL_SETTING
from microtopic.errors import ConfigError, StorageError

_CHECK_CONNECTION = "Check {setting} and that the database is running, then retry."
_CHECK_SCHEMA = (
    "Check {setting}, that the database is running and that "
    "`microtopic db upgrade` has been run, then retry."
)
_RUN_UPGRADE = "Run `microtopic db upgrade` against this database, then retry."
_RETRY_LATER = "Retry later, and check the database's own logs if the error persists."
_REPORT_BUG = "This is a bug in Microtopic. Report it with the server log."

# Order matters: subclasses come before their bases, and the builtin TimeoutError
# (which asyncio raises) before OSError, of which it is a subclass.
_TRANSLATIONS: tuple[tuple[type[Exception], str, str], ...] = (
    (sa_exc.TimeoutError, "had no free pooled connection within the pool timeout", _RETRY_LATER),
    (sa_exc.IntegrityError, "rejected a write that violates a constraint", _REPORT_BUG),
    (sa_exc.DataError, "rejected a value that does not fit its column", _REPORT_BUG),
    (sa_exc.OperationalError, "could not be reached or could not run a statement", _CHECK_SCHEMA),
    (sa_exc.ProgrammingError, "rejected a statement, usually for a missing table", _RUN_UPGRADE),
    (sa_exc.InterfaceError, "refused or lost the connection", _CHECK_CONNECTION),
    (sa_exc.InternalError, "reported an internal error", _RETRY_LATER),
    (sa_exc.NotSupportedError, "does not support an operation the store uses", _CHECK_SCHEMA),
    (sa_exc.DatabaseError, "reported an error", _CHECK_SCHEMA),
    (sa_exc.DBAPIError, "failed to run a statement", _CHECK_SCHEMA),
    (sa_exc.DisconnectionError, "dropped the connection", _CHECK_CONNECTION),
    (sa_exc.StatementError, "was sent a statement that could not be prepared", _REPORT_BUG),
    (sa_exc.SQLAlchemyError, "could not be used through SQLAlchemy", _REPORT_BUG),
    (TimeoutError, "did not respond in time", _CHECK_CONNECTION),
    (OSError, "could not be reached", _CHECK_CONNECTION),
)

TRANSLATED_ERRORS: tuple[type[Exception], ...] = tuple(error for error, _, _ in _TRANSLATIONS)
"""Every exception class `translate_storage_error` has a message for."""

# The SQLSTATEs with which PostgreSQL rejects a connection because the URL names a
# database, user or password it does not have, so the fix is in the settings. The
# codes are listed in PostgreSQL's documentation, appendix A "PostgreSQL Error Codes".
_REJECTED_URL_PROBLEMS: dict[str, tuple[str, str]] = {
    # invalid_catalog_name
    "3D000": ("has no database named {database}", "Create it on the server, or correct {setting}."),
    # invalid_authorization_specification: no such role, or pg_hba.conf has no entry for it
    "28000": (
        "rejected the user {user}",
        "Create the user or allow it in pg_hba.conf on the server, or correct {setting}.",
    ),
    # invalid_password
    "28P01": ("rejected the password of the user {user}", "Correct the password in {setting}."),
}


def mask_url(url: str | URL) -> str:
    """Return the database URL with its password, if any, replaced by `***`."""
    return make_url(url).render_as_string(hide_password=True)


def translate_storage_error(
    exc: Exception, *, url: str | URL, action: str, setting: str = DATABASE_URL_SETTING
) -> StorageError:
    """Return the `StorageError` for an error raised while the store tried to do `action`.

    `action` completes the sentence "Could not ...", for example "read generation
    request 3f2a...". Raise the result `from exc` to keep the original for logs.
    """
    description, advice = _describe(exc)
    return StorageError(
        f"Could not {action}: the database at {mask_url(url)} {description} "
        f"({type(exc).__name__}). {advice.format(setting=setting)}"
    )


def translate_connection_error(
    exc: Exception, *, url: str | URL, action: str, setting: str = DATABASE_URL_SETTING
) -> StorageError | ConfigError:
    """Return the error for a failure of the first connection to the database.

    A PostgreSQL server that rejects the URL's database name, user or password gives a
    `ConfigError`, because only a change of the setting fixes it. Any other error gives
    the `StorageError` of `translate_storage_error`.
    """
    orig = exc.orig if isinstance(exc, sa_exc.DBAPIError) else None
    rejection = _REJECTED_URL_PROBLEMS.get(str(getattr(orig, "sqlstate", None)))
    if rejection is None:
        return translate_storage_error(exc, url=url, action=action, setting=setting)

    problem, advice = rejection
    parsed = make_url(url)
    server = f"{parsed.host or 'localhost'}:{parsed.port or 5432}"
    described = problem.format(database=repr(parsed.database), user=repr(parsed.username))
    return ConfigError(
        f"Could not {action}: the PostgreSQL server at {server} {described} "
        f"(URL {mask_url(url)}). {advice.format(setting=setting)}"
    )


@contextmanager
def storage_errors(
    url: str | URL, action: str, *, setting: str = DATABASE_URL_SETTING
) -> Iterator[None]:
    """Raise a `StorageError` in place of any database error raised inside the block."""
    try:
        yield
    except (sa_exc.SQLAlchemyError, OSError) as exc:
        raise translate_storage_error(exc, url=url, action=action, setting=setting) from exc


def _describe(exc: Exception) -> tuple[str, str]:
    for error_class, description, advice in _TRANSLATIONS:
        if isinstance(exc, error_class):
            return description, advice
    return "failed", _REPORT_BUG
