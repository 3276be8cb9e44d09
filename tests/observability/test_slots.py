"""A sliding window kept as one value per time slot."""

from __future__ import annotations

from microtopic.observability.slots import SlidingSlots


def new_slot() -> list[str]:
    return []


def test_same_slot_until_its_end() -> None:
    sliding = SlidingSlots(60.0, 5.0, new_slot)

    sliding.current(100.0).append("a")
    sliding.current(104.9).append("b")
    sliding.current(105.0).append("c")

    assert sliding.values(105.0) == [["a", "b"], ["c"]]


def test_values_drop_slots_outside_window() -> None:
    sliding = SlidingSlots(60.0, 5.0, new_slot)
    sliding.current(100.0).append("old")
    sliding.current(130.0).append("recent")

    in_window = sliding.values(160.0)

    assert in_window == [["recent"]]
    assert len(sliding.slots) == 1


def test_starting_slot_drops_expired_ones() -> None:
    sliding = SlidingSlots(60.0, 5.0, new_slot)
    for second in range(0, 600, 5):
        sliding.current(float(second)).append(str(second))

    assert len(sliding.slots) == sliding.slot_count == 12


def test_by_start_lists_every_slot_of_window() -> None:
    sliding = SlidingSlots(900.0, 60.0, new_slot)
    sliding.current(1000.0).append("a")
    sliding.current(1130.0).append("b")

    slots = sliding.by_start(1130.0)

    assert len(slots) == 15
    starts = [start for start, _ in slots]
    assert starts == [starts[0] + index * 60.0 for index in range(15)]
    assert starts[-1] <= 1130.0 < starts[-1] + 60.0
    filled = [(start, value) for start, value in slots if value is not None]
    assert filled == [(960.0, ["a"]), (1080.0, ["b"])]
