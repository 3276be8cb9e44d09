"""Per-key request and token quotas over sliding windows, checked when a call arrives.

Azure OpenAI enforces a deployment's requests-per-minute quota over short windows and
its tokens-per-minute quota per minute, and charges a request at arrival with its
prompt tokens plus `max_tokens`. The simulator applies this contract, which the key
pool mirrors on the client side:

- RPM R: in any sliding window of `rpm_window_s` simulated seconds, at most
  `max(1, R * rpm_window_s // 60)` requests are admitted;
- TPM T: in any sliding window of `tpm_window_s` simulated seconds, at most
  `T * tpm_window_s // 60` tokens are admitted;
- a request admitted at simulated time e counts in the windows (t - window, t] that
  contain e, so it stops counting at e + window;
- only admitted requests are charged, and a charge is never changed afterwards.

Times are simulated seconds: real monotonic seconds multiplied by the time scale.
"""

from __future__ import annotations

import bisect
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

# A window drops the entries that left it once they are this many and over half its list.
_COMPACT_AFTER_ENTRIES = 1024


def request_limit(requests_per_minute: int, window_s: int) -> int:
    """Return the requests admitted per window of `window_s` seconds under an RPM quota."""
    return max(1, requests_per_minute * window_s // 60)


def token_limit(tokens_per_minute: int, window_s: int) -> int:
    """Return the tokens admitted per window of `window_s` seconds under a TPM quota."""
    return tokens_per_minute * window_s // 60


class SimulatedClock:
    """Simulated seconds since the clock was created: real monotonic time times `time_scale`.

    `monotonic` is the real clock in seconds. Tests pass a clock they move by hand.
    """

    def __init__(self, time_scale: float, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.time_scale = time_scale
        self._monotonic = monotonic
        self._origin_s = monotonic()

    def now_s(self) -> float:
        """Return the simulated time in seconds."""
        return (self._monotonic() - self._origin_s) * self.time_scale

    def real_s(self, simulated_s: float) -> float:
        """Convert a simulated duration to real seconds."""
        return simulated_s / self.time_scale


class SlidingWindow:
    """Amounts admitted in the last `window_s` simulated seconds, against an optional limit.

    Entries are kept in arrival order with the running total of everything admitted up
    to each, so the amount in the window and the wait for a new amount take amortised
    O(1) and O(log n) time. `peak` is the largest amount ever inside one window; amounts
    only enter at admissions, so checking after each admission finds it.
    """

    def __init__(self, window_s: float, limit: int | None) -> None:
        self.window_s = window_s
        self.limit = limit
        self.admitted = 0
        self.peak = 0
        self._times_s: list[float] = []
        self._running_totals: list[int] = []
        self._first = 0
        self._expired_total = 0

    def used(self, now_s: float) -> int:
        """Return the amount admitted inside the window that ends at `now_s`."""
        self._expire(now_s)
        return self.admitted - self._expired_total

    def remaining(self, now_s: float) -> int | None:
        """Return how much more the window ending at `now_s` admits, or None if unlimited."""
        if self.limit is None:
            return None
        return max(0, self.limit - self.used(now_s))

    def wait_s(self, now_s: float, amount: int) -> float | None:
        """Return the simulated seconds until `amount` fits, 0 if it fits now.

        None means it never fits, because `amount` alone is over the limit.
        """
        if self.limit is None:
            return 0.0
        if amount > self.limit:
            return None
        excess = self.used(now_s) + amount - self.limit
        if excess <= 0:
            return 0.0

        # The oldest entries leave first, so find the first whose departure frees enough.
        target = self._expired_total + excess
        index = bisect.bisect_left(self._running_totals, target, lo=self._first)
        return self._times_s[index] + self.window_s - now_s

    def add(self, now_s: float, amount: int) -> None:
        """Admit `amount` at `now_s`, which must not be earlier than the previous admission."""
        self._expire(now_s)
        self.admitted += amount
        self._times_s.append(now_s)
        self._running_totals.append(self.admitted)
        self.peak = max(self.peak, self.admitted - self._expired_total)

    def _expire(self, now_s: float) -> None:
        cutoff_s = now_s - self.window_s
        while self._first < len(self._times_s) and self._times_s[self._first] <= cutoff_s:
            self._expired_total = self._running_totals[self._first]
            self._first += 1

        if self._first > _COMPACT_AFTER_ENTRIES and self._first * 2 > len(self._times_s):
            del self._times_s[: self._first]
            del self._running_totals[: self._first]
            self._first = 0


class QuotaKind(StrEnum):
    """The quota a request can exceed."""

    REQUESTS = "requests"
    TOKENS = "tokens"


@dataclass(frozen=True)
class QuotaRejection:
    """The reason a request was not admitted, and the simulated seconds until it would fit.

    `wait_s` is None when the request can never fit because its token charge alone is
    over the window's limit.
    """

    exceeded: tuple[QuotaKind, ...]
    charge_tokens: int
    wait_s: float | None


class KeyQuota:
    """The request and token windows of one key, which admit or reject each request."""

    def __init__(self, requests: SlidingWindow, tokens: SlidingWindow) -> None:
        self.requests = requests
        self.tokens = tokens

    @property
    def limited(self) -> bool:
        """Whether the key has a request or a token quota."""
        return self.requests.limit is not None or self.tokens.limit is not None

    def admit(self, now_s: float, charge_tokens: int) -> QuotaRejection | None:
        """Charge one request of `charge_tokens` tokens at `now_s`, or return why it does not fit.

        A rejected request is charged nothing.
        """
        request_wait_s = self.requests.wait_s(now_s, 1)
        token_wait_s = self.tokens.wait_s(now_s, charge_tokens)
        if token_wait_s is None:
            return QuotaRejection((QuotaKind.TOKENS,), charge_tokens, wait_s=None)

        exceeded = []
        if request_wait_s:
            exceeded.append(QuotaKind.REQUESTS)
        if token_wait_s:
            exceeded.append(QuotaKind.TOKENS)
        if exceeded:
            wait_s = max(request_wait_s or 0.0, token_wait_s)
            return QuotaRejection(tuple(exceeded), charge_tokens, wait_s=wait_s)

        self.requests.add(now_s, 1)
        self.tokens.add(now_s, charge_tokens)
        return None

    def rate_limit_headers(self, now_s: float) -> dict[str, str]:
        """Return the `x-ratelimit-*` headers for each quota the key has, as of `now_s`.

        The limit is the window's limit and the remaining amount is what the current
        window still admits, in the same unit.
        """
        headers = {}
        for kind, window in ((QuotaKind.REQUESTS, self.requests), (QuotaKind.TOKENS, self.tokens)):
            remaining = window.remaining(now_s)
            if window.limit is None or remaining is None:
                continue
            headers[f"x-ratelimit-limit-{kind}"] = str(window.limit)
            headers[f"x-ratelimit-remaining-{kind}"] = str(remaining)
        return headers


def whole_ms(seconds: float) -> int:
    """Return `seconds` in milliseconds, rounded up, so that waiting that long is enough."""
    # Rounding to nanoseconds first keeps float noise (0.3 s is 300.00000000000006 ms)
    # from adding a millisecond.
    return math.ceil(round(seconds * 1000, 6))
