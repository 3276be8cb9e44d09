"""A sliding window kept as one value per time slot, so memory stays bounded.

Windowed stats (`performance`, `error_stats`) keep a value per slot of `slot_s`
seconds: a histogram of durations, or counts of outcomes. A window's figures merge
the slots it covers: the current, partly filled slot and the full ones before it.
So a window of `window_s` seconds spans between `window_s - slot_s` and `window_s`
seconds. Slots that fall out of the window are dropped whole, when a slot starts
or when the window is read, so at most `window_s / slot_s` values are kept
whatever the traffic.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class SlidingSlots(Generic[T]):
    """One value per time slot of `slot_s` seconds, over the last `window_s` seconds.

    `new_slot` builds the empty value of a slot that starts. Times are seconds on
    the caller's monotonic clock. The caller serialises access.
    """

    def __init__(self, window_s: float, slot_s: float, new_slot: Callable[[], T]) -> None:
        self.window_s = window_s
        self.slot_s = slot_s
        self.slot_count = round(window_s / slot_s)
        self.slots: dict[int, T] = {}
        self._new_slot = new_slot

    def current(self, now: float) -> T:
        """Return the value of the slot that contains `now`, started empty if it is new."""
        slot = int(now // self.slot_s)
        value = self.slots.get(slot)
        if value is None:
            value = self.slots[slot] = self._new_slot()
            self._drop_before(slot - self.slot_count + 1)
        return value

    def values(self, now: float) -> list[T]:
        """Return the values of the slots in the window that ends at `now`, oldest first."""
        self._drop_before(int(now // self.slot_s) - self.slot_count + 1)
        return [self.slots[slot] for slot in sorted(self.slots)]

    def by_start(self, now: float) -> list[tuple[float, T | None]]:
        """Return every slot of the window that ends at `now` with its start, oldest first.

        A slot that saw nothing has the value None.
        """
        current = int(now // self.slot_s)
        self._drop_before(current - self.slot_count + 1)
        return [
            (index * self.slot_s, self.slots.get(index))
            for index in range(current - self.slot_count + 1, current + 1)
        ]

    def _drop_before(self, oldest: int) -> None:
        for slot in [slot for slot in self.slots if slot < oldest]:
            del self.slots[slot]
