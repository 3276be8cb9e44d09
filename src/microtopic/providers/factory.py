"""Build the provider for each configured key."""

from __future__ import annotations

import redis.asyncio

from microtopic.config import GatewayConfig, KeyConfig, ProviderKind, Settings
from microtopic.keypool import KeyPool, PooledKey
from microtopic.keypool.redis_state import RedisPoolState
from microtopic.keypool.sharing import PoolSharing
from microtopic.providers.base import Provider
from microtopic.providers.local import LocalProvider
from microtopic.providers.remote import RemoteProvider
from microtopic.redis_client import describe_redis_url


def create_provider(key: KeyConfig, settings: Settings) -> Provider:
    """Return the client that serves `key`."""
    if key.provider is ProviderKind.LOCAL:
        return LocalProvider(settings.local_model)
    return RemoteProvider.from_key(key)


def build_pool(
    settings: Settings,
    gateway: GatewayConfig | None = None,
    redis_client: redis.asyncio.Redis | None = None,
) -> KeyPool:
    """Return a pool of every configured key, or of the local model when none is.

    With a Redis client and `gateway.share_state`, the pool shares its keys'
    state with every other process using the same Redis namespace.
    """
    gateway = gateway or settings.effective_gateway()
    keys = [
        PooledKey(config=key, provider=create_provider(key, settings))
        for key in settings.effective_keys()
    ]
    store = None
    if redis_client is not None and settings.redis_url is not None and gateway.share_state:
        store = RedisPoolState(
            redis_client,
            settings.redis_namespace,
            probe_s=gateway.circuit_breaker.reset_s,
            name=describe_redis_url(settings.redis_url.get_secret_value()),
        )
    return KeyPool(keys, gateway, PoolSharing(store))
