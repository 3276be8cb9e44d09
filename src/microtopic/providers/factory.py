"""Build the provider for each configured key."""

from __future__ import annotations

from microtopic.config import GatewayConfig, KeyConfig, ProviderKind, Settings
from microtopic.keypool import KeyPool, PooledKey
from microtopic.providers.base import Provider
from microtopic.providers.local import LocalProvider
from microtopic.providers.remote import RemoteProvider


def create_provider(key: KeyConfig, settings: Settings) -> Provider:
    """Return the client that serves `key`."""
    if key.provider is ProviderKind.LOCAL:
        return LocalProvider(settings.local_model)
    return RemoteProvider.from_key(key)


def build_pool(settings: Settings, gateway: GatewayConfig | None = None) -> KeyPool:
    """Return a pool of every configured key, or of the local model when none is."""
    keys = [
        PooledKey(config=key, provider=create_provider(key, settings))
        for key in settings.effective_keys()
    ]
    return KeyPool(keys, gateway or settings.effective_gateway())
