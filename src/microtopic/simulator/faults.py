"""Faults the simulator injects into chat calls: their kinds, their settings and the random draw.

A fault comes from the control API (`Fault`, for the next `count` calls of one key) or
from the configured `fault_rates` (a probability per call). Kinds fall in two groups:

- error faults return their response as soon as the call's key is known, before the
  body is read or the quota is checked, so they never consume quota: `rate_limit`, `server_error`,
  `service_unavailable`, `hang`, `connection_reset`, `revoked`, `insufficient_quota`
  and `content_filter_prompt`;
- reply faults change the 200 reply of a call that was admitted, and so consumed quota
  like any other success: `content_filter_completion`, `truncated` and `fenced_json`.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator


class FaultKind(StrEnum):
    """Kind of injected fault. The kind `none` clears the key's fault."""

    NONE = "none"
    RATE_LIMIT = "rate_limit"
    SERVER_ERROR = "server_error"
    SERVICE_UNAVAILABLE = "service_unavailable"
    HANG = "hang"
    CONNECTION_RESET = "connection_reset"
    REVOKED = "revoked"
    INSUFFICIENT_QUOTA = "insufficient_quota"
    CONTENT_FILTER_PROMPT = "content_filter_prompt"
    CONTENT_FILTER_COMPLETION = "content_filter_completion"
    TRUNCATED = "truncated"
    FENCED_JSON = "fenced_json"


REPLY_FAULT_KINDS = frozenset(
    {FaultKind.CONTENT_FILTER_COMPLETION, FaultKind.TRUNCATED, FaultKind.FENCED_JSON}
)
ERROR_FAULT_KINDS = frozenset(FaultKind) - REPLY_FAULT_KINDS - {FaultKind.NONE}

# The 429 faults, counted as injected rate limits next to the quota's own 429s.
RATE_LIMIT_FAULT_KINDS = frozenset({FaultKind.RATE_LIMIT, FaultKind.INSUFFICIENT_QUOTA})


class FilterCategory(StrEnum):
    """A harm category of Azure OpenAI's content filter."""

    HATE = "hate"
    SEXUAL = "sexual"
    VIOLENCE = "violence"
    SELF_HARM = "self_harm"


FaultRate = Annotated[float, Field(ge=0, le=1)]
FaultRates = dict[FaultKind, FaultRate]


class Fault(BaseModel):
    """A fault to inject into the calls made with one key, as sent to the control API.

    `count` is how many of the following calls it applies to, and None keeps the fault
    until it is changed. `retry_after_s` and `retry_after_ms` are the hints a `rate_limit`
    fault sends, and `category` is the harm category a content filter fault reports.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: FaultKind
    retry_after_s: float | None = Field(default=None, ge=0, le=86_400)
    retry_after_ms: int | None = Field(default=None, ge=0, le=86_400_000)
    count: int | None = Field(default=None, ge=1)
    category: FilterCategory = FilterCategory.VIOLENCE

    @field_validator("retry_after_s")
    @classmethod
    def _retry_after_is_finite(cls, retry_after_s: float | None) -> float | None:
        if retry_after_s is not None and not math.isfinite(retry_after_s):
            raise ValueError("must be a finite number of seconds")
        return retry_after_s

    def retry_after_whole_s(self) -> int | None:
        """Return the delay for the `retry-after` header in whole seconds, rounded up."""
        if self.retry_after_s is not None:
            return math.ceil(self.retry_after_s)
        if self.retry_after_ms is not None:
            return math.ceil(self.retry_after_ms / 1000)
        return None


def validate_fault_rates(rates: Mapping[FaultKind, float]) -> None:
    """Raise ValueError if `rates` names `none` or its probabilities add up to more than 1."""
    if FaultKind.NONE in rates:
        raise ValueError("`none` is not a fault kind that can have a rate")
    total = math.fsum(rates.values())
    if total > 1:
        raise ValueError(f"the fault rates add up to {total:g}, but their sum must be at most 1")


def draw_fault_kind(
    rates: Mapping[FaultKind, float], kinds: frozenset[FaultKind], rng: random.Random
) -> FaultKind | None:
    """Draw which of `kinds` fails this call, each with its probability in `rates`, or None.

    The kinds are mutually exclusive, because one uniform number picks at most one. No
    number is drawn when none of `kinds` has a rate, so the sequence of draws, and with
    a seed the whole run, does not depend on rates that cannot apply.
    """
    candidates = [(kind, rates[kind]) for kind in FaultKind if kind in kinds and rates.get(kind)]
    if not candidates:
        return None

    roll = rng.random()
    cumulative_rate = 0.0
    for kind, rate in candidates:
        cumulative_rate += rate
        if roll < cumulative_rate:
            return kind
    return None
