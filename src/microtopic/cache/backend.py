"""The protocols of cache backends: entry storage, and locks shared by several processes."""

from __future__ import annotations

from typing import Protocol


class CacheBackend(Protocol):
    """Entries as text under string keys, each expiring after its `ttl_s`.

    `name` describes the backend for logs and messages and never contains a secret.
    A backend that fails raises `RedisUnavailableError`.
    """

    name: str

    async def get(self, key: str) -> str | None:
        """Return the entry of `key`, or None when there is none or it expired."""
        ...

    async def set(self, key: str, value: str, *, ttl_s: float) -> None:
        """Store `value` under `key` for `ttl_s` seconds, replacing any entry."""
        ...

    async def aclose(self) -> None:
        """Release the backend's connections."""
        ...


class LockBackend(CacheBackend, Protocol):
    """A cache backend shared by several processes, with a lock per key.

    The process that holds the lock of a key generates its topic; the others
    `peek` until the entry appears or the lock is gone.
    """

    async def acquire_lock(self, key: str, *, ttl_s: float) -> str | None:
        """Take the lock of `key` for `ttl_s` and return its token, or None if it is held."""
        ...

    async def renew_lock(self, key: str, token: str, *, ttl_s: float) -> bool:
        """Extend the lock of `key` to `ttl_s` from now if it still holds `token`."""
        ...

    async def release_lock(self, key: str, token: str) -> None:
        """Release the lock of `key` if it still holds `token`."""
        ...

    async def peek(self, key: str) -> tuple[str | None, bool]:
        """Return the entry of `key`, if any, and whether its lock is held."""
        ...
