"""The key pool: which keys exist, which may serve now, and what each has done."""

from microtopic.keypool.pool import KeyPool, PooledKey

__all__ = ["KeyPool", "PooledKey"]
