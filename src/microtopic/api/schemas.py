"""Response bodies of the HTTP API."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel

from microtopic.domain import GeneratedTopic
from microtopic.keypool import PooledKey
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
    success: bool = True
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
        return cls(data=outcome.topic, metadata=metadata)


class KeyOut(BaseModel):
    """A key as shown to operators: never its secret, only a masked hint."""

    name: str
    provider: str
    deployment: str
    endpoint_host: str
    masked_secret: str
    is_active: bool
    disabled_reason: str | None
    usage_count: int
    error_count: int
    active_calls: int
    max_concurrency: int | None
    last_used: datetime | None
    last_error: str | None

    @classmethod
    def from_key(cls, key: PooledKey) -> KeyOut:
        config = key.config
        return cls(
            name=key.name,
            provider=str(config.provider),
            deployment=config.model_label,
            endpoint_host=config.endpoint_host,
            masked_secret=mask_secret(config.secret.get_secret_value() if config.secret else None),
            is_active=key.is_active,
            disabled_reason=key.disabled_reason,
            usage_count=key.usage_count,
            error_count=key.error_count,
            active_calls=key.active_calls,
            max_concurrency=config.max_concurrency,
            last_used=key.last_used,
            last_error=key.last_error,
        )


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
    total_requests: int
    failed_requests: int


class ServiceStatsResponse(BaseModel):
    success: bool = True
    capacity: CapacityOut
    keys: list[KeyOut]


class OperationOut(BaseModel):
    operation: str
    count: int
    error_count: int
    mean_ms: float
    min_ms: float
    max_ms: float
    p50_ms: float
    p95_ms: float
    recent_ms: list[float]


class KeyHealthOut(BaseModel):
    name: str
    status: str
    error_rate: float
    last_error: str | None


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
    key_health: list[KeyHealthOut]
    system: SystemOut
