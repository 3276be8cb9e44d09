"""Response bodies of the HTTP API."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

from microtopic.domain import GeneratedTopic
from microtopic.keypool import HealthRecord, PooledKey, QuotaSnapshot
from microtopic.keypool.redis_state import SharedKeyState
from microtopic.observability import ErrorCounts, ErrorWindows, OperationStats, WindowStats
from microtopic.service import GenerationOutcome


class StepOut(BaseModel):
    name: str
    started_at: datetime
    finished_at: datetime
    duration_ms: float


class TokensOut(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class GenerationMetadata(BaseModel):
    request_id: str
    steps: list[StepOut]
    keys_used: list[str]
    models: list[str]
    tokens: TokensOut
    llm_calls: int
    duration_ms: float
    prompt_version: str


class GenerationResponse(BaseModel):
    """A generated topic with the metadata of its request.

    `cached` is set when the topic came from the content cache, or from an identical
    request that generated it at the same time. The metadata then shows no keys,
    tokens or LLM calls, and one step named `cache`.
    """

    success: bool = True
    cached: bool = False
    data: GeneratedTopic
    metadata: GenerationMetadata

    @classmethod
    def from_outcome(cls, outcome: GenerationOutcome) -> GenerationResponse:
        metadata = GenerationMetadata(
            request_id=outcome.request_id,
            steps=[
                StepOut(
                    name=step.name,
                    started_at=step.started_at,
                    finished_at=step.finished_at,
                    duration_ms=step.duration_ms,
                )
                for step in outcome.steps
            ],
            keys_used=outcome.keys_used,
            models=outcome.models,
            tokens=TokensOut(
                prompt_tokens=outcome.tokens.prompt_tokens,
                completion_tokens=outcome.tokens.completion_tokens,
                total_tokens=outcome.tokens.total_tokens,
            ),
            llm_calls=outcome.llm_calls,
            duration_ms=outcome.duration_ms,
            prompt_version=outcome.prompt_version,
        )
        return cls(cached=outcome.cached, data=outcome.topic, metadata=metadata)


class QuotaOut(BaseModel):
    """A key's use of its request and token windows now; None where it has no limit."""

    requests_limit: int | None
    requests_used: int | None
    requests_remaining: int | None
    tokens_limit: int | None
    tokens_used: int | None
    tokens_remaining: int | None

    @classmethod
    def from_snapshot(cls, snapshot: QuotaSnapshot) -> QuotaOut:
        requests_limited = snapshot.requests_limit is not None
        tokens_limited = snapshot.tokens_limit is not None
        return cls(
            requests_limit=snapshot.requests_limit,
            requests_used=snapshot.requests_used if requests_limited else None,
            requests_remaining=snapshot.requests_remaining,
            tokens_limit=snapshot.tokens_limit,
            tokens_used=snapshot.tokens_used if tokens_limited else None,
            tokens_remaining=snapshot.tokens_remaining,
        )


class HealthCheckOut(BaseModel):
    """The outcome of a key's last health check; `status` is ok, failed or skipped."""

    status: str
    checked_at: datetime
    latency_ms: float | None
    error_code: str | None
    reason: str | None

    @classmethod
    def from_record(cls, record: HealthRecord) -> HealthCheckOut:
        latency_ms = None if record.latency_ms is None else round(record.latency_ms, 1)
        return cls(
            status=record.status,
            checked_at=record.checked_at,
            latency_ms=latency_ms,
            error_code=record.error_code,
            reason=record.reason,
        )


class SharedKeyOut(BaseModel):
    """A key's use across every process that shares it through Redis, as last read.

    `admitted` counts calls charged to the key, `served` those that succeeded;
    a call that failed over counts against each key it was sent to.
    """

    requests_used: int
    tokens_used: int
    admitted: int
    served: int
    errors: int
    errors_by_class: dict[str, int]

    @classmethod
    def from_state(cls, state: SharedKeyState) -> SharedKeyOut:
        return cls(
            requests_used=state.requests_used,
            tokens_used=state.tokens_used,
            admitted=state.admitted,
            served=state.served,
            errors=state.errors,
            errors_by_class=state.errors_by_class,
        )


class KeyOut(BaseModel):
    """A key as shown to operators: never its secret, only a masked hint.

    `state` is the key's `KeyState`. `ready_in_s` is how long until it may take calls
    again, quota aside: 0 when it can now, None when it will not come back by itself.
    `usage_count`, `error_count` and `errors_by_class` count since start. The last
    two count only the failures held against the key, and `errors_by_class` its
    failed health checks too.
    `attempts_last_1m`, `errors_last_1m` and their 15-minute pair count every
    attempt on the key in that window, whatever its outcome (see `ErrorsOut`).
    """

    name: str
    provider: str
    deployment: str
    endpoint_host: str
    masked_secret: str
    priority: int
    state: str
    is_active: bool
    disabled_reason: str | None
    exhausted_reason: str | None
    cooldown_remaining_s: float
    ready_in_s: float | None
    circuit_state: str
    consecutive_failures: int
    quota: QuotaOut
    usage_count: int
    error_count: int
    errors_by_class: dict[str, int]
    active_calls: int
    max_concurrency: int | None
    last_used: datetime | None
    last_error: str | None
    last_health_check: HealthCheckOut | None
    shared: SharedKeyOut | None = None
    attempts_last_1m: int = Field(
        default=0, description="LLM call attempts on the key in the last minute."
    )
    errors_last_1m: dict[str, int] = Field(
        default_factory=dict,
        description="Failed attempts on the key in the last minute, by error code. "
        "Codes without a failure are left out.",
    )
    attempts_last_15m: int = Field(
        default=0, description="LLM call attempts on the key in the last 15 minutes."
    )
    errors_last_15m: dict[str, int] = Field(
        default_factory=dict,
        description="Failed attempts on the key in the last 15 minutes, by error code. "
        "Codes without a failure are left out.",
    )

    @classmethod
    def from_key(cls, key: PooledKey, now: float, errors: ErrorWindows) -> KeyOut:
        """Describe `key` at `now`, a time on the monotonic clock, with its `errors`."""
        config = key.config
        ready_at = key.ready_at(now)
        return cls(
            name=key.name,
            provider=str(config.provider),
            deployment=config.model_label,
            endpoint_host=config.endpoint_host,
            masked_secret=mask_secret(config.secret.get_secret_value() if config.secret else None),
            priority=config.priority,
            state=key.state(now).value,
            is_active=key.is_active,
            disabled_reason=key.disabled_reason,
            exhausted_reason=key.exhausted_reason if key.is_exhausted(now) else None,
            cooldown_remaining_s=round(max(0.0, key.cooldown_until - now), 3),
            ready_in_s=None if ready_at is None else round(ready_at - now, 3),
            circuit_state=key.breaker.state(now).value,
            consecutive_failures=key.breaker.consecutive_failures,
            quota=QuotaOut.from_snapshot(key.quota.snapshot(now)),
            usage_count=key.usage_count,
            error_count=key.error_count,
            errors_by_class=dict(key.errors_by_class),
            active_calls=key.active_calls,
            max_concurrency=config.max_concurrency,
            last_used=key.last_used,
            last_error=key.last_error,
            last_health_check=None
            if key.health is None
            else HealthCheckOut.from_record(key.health),
            shared=None if key.shared is None else SharedKeyOut.from_state(key.shared),
            attempts_last_1m=errors.last_1m.attempts,
            errors_last_1m=errors.last_1m.errors,
            attempts_last_15m=errors.last_15m.attempts,
            errors_last_15m=errors.last_15m.errors,
        )


class KeyCheckOut(BaseModel):
    """A key's state right after a health check, and the check's outcome."""

    name: str
    state: str
    check: HealthCheckOut

    @classmethod
    def from_check(cls, key: PooledKey, record: HealthRecord, now: float) -> KeyCheckOut:
        return cls(
            name=key.name, state=key.state(now).value, check=HealthCheckOut.from_record(record)
        )


class KeyCheckResponse(BaseModel):
    success: bool = True
    keys: list[KeyCheckOut]


def mask_secret(secret: str | None) -> str:
    """Return a hint that tells keys apart without revealing them: the last 4 characters."""
    if not secret:
        return "-"
    if len(secret) < 16:
        return "****"
    return f"****{secret[-4:]}"


class CapacityOut(BaseModel):
    max_concurrent_requests: int
    active_requests: int
    available_slots: int
    queued_requests: int
    max_queue_size: int
    total_requests: int
    failed_requests: int


class WindowOut(BaseModel):
    """An operation's timings over the last `window_s` seconds; zeros when it had none."""

    window_s: float
    count: int
    error_count: int
    mean_ms: float
    min_ms: float
    max_ms: float
    p50_ms: float
    p95_ms: float
    p99_ms: float

    @classmethod
    def from_stats(cls, stats: WindowStats) -> WindowOut:
        return cls(**vars(stats))


class OperationOut(BaseModel):
    """An operation's timings: totals since start, the last durations, and two windows.

    Percentiles are within about 2% of the exact figure, while counts, mean and
    extremes are exact. `last_1m` spans 55 to 60 s and `last_15m` 14 to 15 min.
    """

    operation: str
    count: int
    error_count: int
    mean_ms: float
    min_ms: float
    max_ms: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    recent_ms: list[float]
    last_1m: WindowOut
    last_15m: WindowOut

    @classmethod
    def from_stats(cls, stats: OperationStats) -> OperationOut:
        return cls(
            operation=stats.operation,
            count=stats.count,
            error_count=stats.error_count,
            mean_ms=stats.mean_ms,
            min_ms=stats.min_ms,
            max_ms=stats.max_ms,
            p50_ms=stats.p50_ms,
            p95_ms=stats.p95_ms,
            p99_ms=stats.p99_ms,
            recent_ms=stats.recent_ms,
            last_1m=WindowOut.from_stats(stats.last_1m),
            last_15m=WindowOut.from_stats(stats.last_15m),
        )


class ErrorClassOut(BaseModel):
    """The failed attempts of one error class in a period, and their share of all attempts."""

    count: int
    rate: float = Field(
        description="`count` divided by the period's attempts, from 0 to 1, rounded to 4 "
        "places; 0 without attempts."
    )


class ErrorPeriodOut(BaseModel):
    """LLM call attempts in one period, and the failed ones by error code."""

    window_s: float | None = Field(
        description="Length of the sliding window in seconds, or null for the counts since start."
    )
    attempts: int = Field(description="Attempts on any key, whatever their outcome.")
    failed: int = Field(description="Attempts that failed, with any error code.")
    failure_rate: float = Field(
        description="`failed` divided by `attempts`, from 0 to 1, rounded to 4 places."
    )
    by_class: dict[str, ErrorClassOut] = Field(
        description="Failed attempts by error code, such as `upstream_rate_limited`. "
        "Codes without a failure are left out."
    )

    @classmethod
    def from_counts(cls, counts: ErrorCounts) -> ErrorPeriodOut:
        return cls(
            window_s=counts.window_s,
            attempts=counts.attempts,
            failed=counts.failed,
            failure_rate=round(counts.rate(counts.failed), 4),
            by_class={
                code: ErrorClassOut(count=count, rate=round(counts.rate(count), 4))
                for code, count in counts.errors.items()
            },
        )


class ErrorsOut(BaseModel):
    """Every key's LLM call attempts and their errors by class, in three periods.

    An attempt counts whatever its outcome: a failure that is not held against the
    key, such as `content_filtered`, counts too. Health checks are not attempts.
    The windows slide: the last minute spans 55 to 60 s and the last 15 minutes 14 to
    15 min. The counts are this process's, like the performance stats.
    """

    last_1m: ErrorPeriodOut
    last_15m: ErrorPeriodOut
    since_start: ErrorPeriodOut

    @classmethod
    def from_windows(cls, windows: ErrorWindows) -> ErrorsOut:
        return cls(
            last_1m=ErrorPeriodOut.from_counts(windows.last_1m),
            last_15m=ErrorPeriodOut.from_counts(windows.last_15m),
            since_start=ErrorPeriodOut.from_counts(windows.since_start),
        )


class ServiceStatsResponse(BaseModel):
    """Capacity, keys, errors by class and per-operation timings: `generation`,
    `stage:<name>`, `llm_call`, `llm_call:<key name>` and `passthrough`."""

    success: bool = True
    capacity: CapacityOut
    keys: list[KeyOut]
    performance_stats: list[OperationOut] = []
    errors: ErrorsOut | None = Field(
        default=None,
        description="LLM call attempts of all keys and their errors by class, over the "
        "last minute, the last 15 minutes and since start. Null only from a service "
        "older than this field.",
    )


class KeyHealthOut(BaseModel):
    """A key's health for the dashboard: `status` is healthy, or the state that keeps it out."""

    name: str
    status: str
    error_rate: float
    last_error: str | None
    last_health_check: HealthCheckOut | None


class SystemOut(BaseModel):
    python_version: str
    platform: str
    pid: int
    memory_rss_mb: float
    uptime_s: float


class DebugDashboardResponse(BaseModel):
    success: bool = True
    timestamp: datetime
    service_stats: CapacityOut
    key_stats: list[KeyOut]
    performance_stats: list[OperationOut]
    errors: ErrorsOut
    key_health: list[KeyHealthOut]
    system: SystemOut
