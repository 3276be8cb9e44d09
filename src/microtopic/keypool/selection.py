"""Selection policies: which of the keys that can take a call gets it.

Priority groups come first: only keys of the lowest `priority` number among the
candidates are considered, so pay-as-you-go keys (group 2) take overflow from
provisioned ones (group 1). Within the group, the configured policy decides.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from microtopic.config import SelectionPolicy
from microtopic.keypool.key import PooledKey


class Selector:
    """Applies one policy; keeps the round-robin cursor between calls."""

    def __init__(self, policy: SelectionPolicy, order: Sequence[PooledKey]) -> None:
        self._policy = policy
        self._position = {key.name: index for index, key in enumerate(order)}
        self._count = len(order)
        self._cursor = 0

    def choose(
        self,
        candidates: Sequence[PooledKey],
        tokens_for: Callable[[PooledKey], int],
        now: float,
    ) -> PooledKey:
        """Return the chosen key among non-empty `candidates`."""
        group = min(key.config.priority for key in candidates)
        in_group = [key for key in candidates if key.config.priority == group]
        if self._policy is SelectionPolicy.QUOTA_AWARE:
            chosen = max(in_group, key=lambda k: self._roomiest(k, tokens_for(k), now))
        elif self._policy is SelectionPolicy.LEAST_BUSY:
            chosen = min(in_group, key=lambda k: (k.active_calls, self._turn(k)))
        else:
            chosen = min(in_group, key=self._turn)
        self._cursor = (self._position[chosen.name] + 1) % self._count
        return chosen

    def _roomiest(self, key: PooledKey, tokens: int, now: float) -> tuple[float, int, int]:
        # Most calls of this size left in the quota windows, then fewest in flight,
        # then the next in turn, so equal keys still share the load evenly.
        return (key.quota.headroom(tokens, now), -key.active_calls, -self._turn(key))

    def _turn(self, key: PooledKey) -> int:
        return (self._position[key.name] - self._cursor) % self._count
