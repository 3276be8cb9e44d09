"""Per-key quota bookkeeping: sliding windows of requests and tokens, as Azure counts them.

A call is charged when the pool admits it (one request, and its admission tokens:
prompt plus `max_tokens`), before it is sent, so two calls admitted at the same
moment can never overrun a key together. A charge is refunded only if the call is
never sent; once sent, the provider has counted it too.

Times are seconds on the event loop's monotonic clock.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, replace

from microtopic.config import QuotaConfig

# How far the pool may lengthen a key's windows after the provider refused a call
# they had room for, as a share of the window, and how much of that each success undoes.
MAX_WIDENING = 0.1
RELAX_SHARE = 0.05


class SlidingWindow:
    """At most `limit` units in any `length_s` seconds.

    Entries are (time, amount) pairs kept in time order, so expiry and the sum
    cost amortised O(1) per charge.
    """

    def __init__(self, limit: int, length_s: float) -> None:
        self.limit = limit
        self.length_s = length_s
        self.base_length_s = length_s
        self._entries: deque[tuple[float, int]] = deque()
        self._used = 0

    def used(self, now: float) -> int:
        """Return the units charged in the window that ends at `now`."""
        self._expire(now)
        return self._used

    def remaining(self, now: float) -> int:
        return max(0, self.limit - self.used(now))

    def fits(self, amount: int, now: float) -> bool:
        return self.used(now) + amount <= self.limit

    def charge(self, amount: int, now: float) -> None:
        self._expire(now)
        self._entries.append((now, amount))
        self._used += amount

    def refund(self, amount: int, charged_at: float) -> bool:
        """Take back a charge made at `charged_at`; return False if it had expired."""
        for index, (when, value) in enumerate(self._entries):
            if when == charged_at and value >= amount:
                self._entries[index] = (when, value - amount)
                self._used -= amount
                return True
        return False

    def move(self, amount: int, charged_at: float, now: float) -> None:
        """Move a charge made at `charged_at` to `now`, when the call actually left."""
        if self.refund(amount, charged_at):
            self.charge(amount, now)

    def fits_at(self, amount: int, now: float) -> float | None:
        """Return the earliest time at which `amount` fits, or None if it never can."""
        if amount > self.limit:
            return None
        excess = self.used(now) + amount - self.limit
        if excess <= 0:
            return now
        for when, value in self._entries:
            excess -= value
            if excess <= 0:
                return when + self.length_s
        return now  # unreachable: the entries add up to `used`

    def widen(self, by_s: float) -> None:
        """Lengthen the window by `by_s`, at most to `MAX_WIDENING` of its base length."""
        longest_s = self.base_length_s * (1 + MAX_WIDENING)
        self.length_s = min(longest_s, self.length_s + by_s)

    def relax(self) -> None:
        """Shrink a widened window a little back towards its base length."""
        self.length_s -= (self.length_s - self.base_length_s) * RELAX_SHARE

    def charge_hidden(self, amount: int, now: float) -> None:
        """Charge use that another client of the same key made, learnt from the provider.

        It is charged now, later than it happened, so it expires late: the safe side.
        """
        if amount > 0:
            self.charge(amount, now)

    def _expire(self, now: float) -> None:
        horizon = now - self.length_s
        while self._entries and self._entries[0][0] <= horizon:
            self._used -= self._entries.popleft()[1]


@dataclass(frozen=True)
class Charge:
    """The charge of one admitted call, and the room left after it.

    `requests_left` and `tokens_left` (None without a limit) and the running totals
    `requests_seq` and `tokens_seq` let `KeyQuota.learn` compare the provider's
    count at admission with ours at the same moment.
    """

    tokens: int
    charged_at: float
    requests_left: int | None
    tokens_left: int | None
    requests_seq: int
    tokens_seq: int


@dataclass(frozen=True)
class QuotaSnapshot:
    """A key's quota at one moment, for stats."""

    requests_limit: int | None
    requests_used: int
    tokens_limit: int | None
    tokens_used: int

    @property
    def requests_remaining(self) -> int | None:
        return None if self.requests_limit is None else self.requests_limit - self.requests_used

    @property
    def tokens_remaining(self) -> int | None:
        return None if self.tokens_limit is None else self.tokens_limit - self.tokens_used


class KeyQuota:
    """The request and token windows of one key; either may be absent (no limit)."""

    def __init__(
        self,
        requests_per_minute: int | None,
        tokens_per_minute: int | None,
        config: QuotaConfig,
    ) -> None:
        self.requests = _window(requests_per_minute, config.rpm_window_s, config)
        self.tokens = _window(tokens_per_minute, config.tpm_window_s, config)
        self._requests_seq = 0
        self._tokens_seq = 0

    @property
    def limited(self) -> bool:
        return self.requests is not None or self.tokens is not None

    def fits(self, tokens: int, now: float) -> bool:
        return (self.requests is None or self.requests.fits(1, now)) and (
            self.tokens is None or self.tokens.fits(tokens, now)
        )

    def fits_at(self, tokens: int, now: float) -> float | None:
        """Return when a call of `tokens` fits, or None if it is larger than the window."""
        times = [now]
        for window, amount in ((self.requests, 1), (self.tokens, tokens)):
            if window is None:
                continue
            at = window.fits_at(amount, now)
            if at is None:
                return None
            times.append(at)
        return max(times)

    def headroom(self, tokens: int, now: float) -> float:
        """Return how many more calls of `tokens` the key could take now."""
        room = math.inf
        if self.requests is not None:
            room = min(room, self.requests.remaining(now))
        if self.tokens is not None:
            room = min(room, self.tokens.remaining(now) / max(1, tokens))
        return room

    def charge(self, tokens: int, now: float) -> Charge:
        if self.requests is not None:
            self.requests.charge(1, now)
        if self.tokens is not None:
            self.tokens.charge(tokens, now)
        self._requests_seq += 1
        self._tokens_seq += tokens
        return Charge(
            tokens=tokens,
            charged_at=now,
            requests_left=None if self.requests is None else self.requests.remaining(now),
            tokens_left=None if self.tokens is None else self.tokens.remaining(now),
            requests_seq=self._requests_seq,
            tokens_seq=self._tokens_seq,
        )

    def refund(self, charge: Charge) -> None:
        if self.requests is not None:
            self.requests.refund(1, charge.charged_at)
        if self.tokens is not None:
            self.tokens.refund(charge.tokens, charge.charged_at)

    def restamp(self, charge: Charge, now: float) -> Charge:
        """Date a charge from when the call was sent rather than admitted.

        The provider counts a call from its arrival; a caller may take a while
        between admission and sending, and the window must not expire early.
        """
        if self.requests is not None:
            self.requests.move(1, charge.charged_at, now)
        if self.tokens is not None:
            self.tokens.move(charge.tokens, charge.charged_at, now)
        return replace(charge, charged_at=now)

    def widen(self, by_s: float) -> None:
        """Lengthen both windows after the provider refused a call that fitted in them.

        Our clock and the provider's disagree by the network delay, which varies;
        the provider's `retry-after` gives how early we were. Successes
        undo the widening slowly (`relax`).
        """
        for window in (self.requests, self.tokens):
            if window is not None:
                window.widen(by_s)

    def relax(self) -> None:
        for window in (self.requests, self.tokens):
            if window is not None:
                window.relax()

    def learn(self, headers: dict[str, str], charge: Charge, now: float) -> None:
        """Take in `x-ratelimit-remaining-*` headers that show use we did not count.

        The provider computed its figure when it admitted the call; ours is the
        room left right after charging it. Calls we charged since may have reached
        the provider first, so they are allowed for before anything is called hidden.
        """
        if self.requests is not None and charge.requests_left is not None:
            reported = _header_int(headers, "x-ratelimit-remaining-requests")
            if reported is not None:
                since = self._requests_seq - charge.requests_seq
                self.requests.charge_hidden(charge.requests_left - since - reported, now)
        if self.tokens is not None and charge.tokens_left is not None:
            reported = _header_int(headers, "x-ratelimit-remaining-tokens")
            if reported is not None:
                since = self._tokens_seq - charge.tokens_seq
                self.tokens.charge_hidden(charge.tokens_left - since - reported, now)

    def snapshot(self, now: float) -> QuotaSnapshot:
        return QuotaSnapshot(
            requests_limit=None if self.requests is None else self.requests.limit,
            requests_used=0 if self.requests is None else self.requests.used(now),
            tokens_limit=None if self.tokens is None else self.tokens.limit,
            tokens_used=0 if self.tokens is None else self.tokens.used(now),
        )


def _header_int(headers: dict[str, str], name: str) -> int | None:
    value = headers.get(name)
    if value is None:
        return None
    try:
        return max(0, int(value))
    except ValueError:
        return None


def _window(per_minute: int | None, window_s: float, config: QuotaConfig) -> SlidingWindow | None:
    # The same arithmetic as the provider: a per-minute quota prorated to the window.
    if per_minute is None:
        return None
    limit = max(1, math.floor(per_minute * window_s / 60))
    return SlidingWindow(limit, window_s / config.time_scale + config.margin_s)
