"""Build the content cache that the settings ask for."""

from __future__ import annotations

import logging

from microtopic.cache.backend import CacheBackend, LockBackend
from microtopic.cache.key import model_fingerprint
from microtopic.cache.memory import MemoryBackend
from microtopic.cache.redis import RedisBackend
from microtopic.cache.topics import TopicCache
from microtopic.config import Settings

logger = logging.getLogger(__name__)

# How long a generation lock lasts without renewal. The leader renews it every
# third of that, so the lock of a process that dies expires within this time.
LOCK_TTL_S = 10.0


def build_topic_cache(
    settings: Settings, *, prompt_version: str, deadline_s: float
) -> TopicCache | None:
    """Return the cache of `settings.cache` in Redis or in memory, or None when it is off.

    `deadline_s` is the request deadline, which bounds how long a follower waits.
    """
    config = settings.cache
    if not config.enabled:
        logger.info("content cache: off")
        return None

    backend: CacheBackend
    locks: LockBackend | None = None
    if settings.redis_url is None:
        backend = MemoryBackend(max_entries=config.max_entries)
    else:
        url = settings.redis_url.get_secret_value()
        backend = locks = RedisBackend.from_url(url, namespace=settings.redis_namespace)
    logger.info("content cache: %s, entries kept for %.0f s", backend.name, config.ttl_s)

    return TopicCache(
        backend,
        ttl_s=config.ttl_s,
        prompt_version=prompt_version,
        models=model_fingerprint(settings.effective_keys(), settings.local_model),
        locks=locks,
        lock_ttl_s=LOCK_TTL_S,
        deadline_s=deadline_s,
    )
