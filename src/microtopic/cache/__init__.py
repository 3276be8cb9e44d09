"""The content cache of generated topics: keys, backends, single flight (docs/cache.md)."""

from microtopic.cache.entry import CachedTopic
from microtopic.cache.factory import build_topic_cache
from microtopic.cache.key import cache_key, model_fingerprint
from microtopic.cache.memory import MemoryBackend
from microtopic.cache.redis import RedisBackend
from microtopic.cache.topics import TopicCache

__all__ = [
    "CachedTopic",
    "MemoryBackend",
    "RedisBackend",
    "TopicCache",
    "build_topic_cache",
    "cache_key",
    "model_fingerprint",
]
