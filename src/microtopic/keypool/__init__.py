"""The key pool: which keys exist, which may serve now, and the queue of calls waiting."""

from microtopic.keypool.breaker import CircuitBreaker, CircuitState
from microtopic.keypool.health import HealthMonitor
from microtopic.keypool.key import HealthRecord, KeyState, PooledKey
from microtopic.keypool.pool import Demand, KeyPool, Lease, PoolCapacity
from microtopic.keypool.quota import KeyQuota, QuotaSnapshot, SlidingWindow

__all__ = [
    "CircuitBreaker",
    "CircuitState",
    "Demand",
    "HealthMonitor",
    "HealthRecord",
    "KeyPool",
    "KeyQuota",
    "KeyState",
    "Lease",
    "PoolCapacity",
    "PooledKey",
    "QuotaSnapshot",
    "SlidingWindow",
]
