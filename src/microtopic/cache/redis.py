"""The Redis cache backend, shared by every process, with the locks of cross-process single flight.

Keys live under the settings' `redis_namespace`. `{namespace}:cache:topic:{key}`
contains an entry and expires through Redis's own expiry.
`{namespace}:cache:lock:{key}` is the lock of the process that generates the topic.
Every Redis error leaves this module as `RedisUnavailableError`.
"""

from __future__ import annotations

import secrets

from redis.asyncio import Redis

from microtopic.redis_client import describe_redis_url, redis_errors

# A Redis that does not respond within this time counts as unavailable, so an
# unreachable server delays a generation by at most a few of these.
REDIS_TIMEOUT_S = 2.0

# Deletes the lock only while it still holds this holder's token: after the lock
# expired and another process took it, the first holder must not release it.
_RELEASE_LOCK_SCRIPT = """
if redis.call("GET", KEYS[1]) == ARGV[1] then
    return redis.call("DEL", KEYS[1])
end
return 0
"""


# Extends the lock only while it still holds this holder's token.
_RENEW_LOCK_SCRIPT = """
if redis.call("GET", KEYS[1]) == ARGV[1] then
    return redis.call("PEXPIRE", KEYS[1], ARGV[2])
end
return 0
"""


class RedisBackend:
    """Entries and locks in Redis under `namespace`; `name` is safe to log."""

    def __init__(self, client: Redis, *, namespace: str, name: str) -> None:
        self.name = name
        self._client = client
        self._prefix = f"{namespace}:cache"
        self._release_lock = client.register_script(_RELEASE_LOCK_SCRIPT)
        self._renew_lock = client.register_script(_RENEW_LOCK_SCRIPT)

    @classmethod
    def from_url(cls, url: str, *, namespace: str) -> RedisBackend:
        """Return a backend on a new connection pool to `url`; nothing connects yet."""
        client = Redis.from_url(
            url,
            decode_responses=True,
            socket_timeout=REDIS_TIMEOUT_S,
            socket_connect_timeout=REDIS_TIMEOUT_S,
        )
        return cls(client, namespace=namespace, name=describe_redis_url(url))

    def entry_key(self, key: str) -> str:
        return f"{self._prefix}:topic:{key}"

    def lock_key(self, key: str) -> str:
        return f"{self._prefix}:lock:{key}"

    async def get(self, key: str) -> str | None:
        with redis_errors(self.name, "read a cached topic"):
            value: str | None = await self._client.get(self.entry_key(key))
        return value

    async def set(self, key: str, value: str, *, ttl_s: float) -> None:
        with redis_errors(self.name, "store a topic in the cache"):
            await self._client.set(self.entry_key(key), value, px=_milliseconds(ttl_s))

    async def acquire_lock(self, key: str, *, ttl_s: float) -> str | None:
        """Take the generation lock of `key` for `ttl_s`; return its token, or None if held."""
        token = secrets.token_hex(16)
        with redis_errors(self.name, "take a generation lock"):
            acquired = await self._client.set(
                self.lock_key(key), token, nx=True, px=_milliseconds(ttl_s)
            )
        return token if acquired else None

    async def renew_lock(self, key: str, token: str, *, ttl_s: float) -> bool:
        """Extend the lock of `key` to `ttl_s` from now if it still holds `token`."""
        with redis_errors(self.name, "renew a generation lock"):
            renewed = await self._renew_lock(
                keys=[self.lock_key(key)], args=[token, _milliseconds(ttl_s)]
            )
        return bool(renewed)

    async def release_lock(self, key: str, token: str) -> None:
        """Release the lock of `key` if it still holds `token`."""
        with redis_errors(self.name, "release a generation lock"):
            await self._release_lock(keys=[self.lock_key(key)], args=[token])

    async def peek(self, key: str) -> tuple[str | None, bool]:
        """Return the entry of `key`, if any, and whether its generation lock is held."""
        with redis_errors(self.name, "check a generation in progress"):
            async with self._client.pipeline(transaction=False) as pipeline:
                pipeline.get(self.entry_key(key))
                pipeline.exists(self.lock_key(key))
                value, locked = await pipeline.execute()
        return value, bool(locked)

    async def aclose(self) -> None:
        with redis_errors(self.name, "close the connections"):
            await self._client.aclose()


def _milliseconds(seconds: float) -> int:
    return max(1, round(seconds * 1000))
