"""The ORM models of the tables, written to run unchanged on SQLite and PostgreSQL.

The migrations in `migrations/versions` create the same tables, and a test
compares them with these models, so a change here needs a new migration.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    CheckConstraint,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

ID_LENGTH = 32
NAME_LENGTH = 200
CODE_LENGTH = 64
ERROR_MESSAGE_LENGTH = 2000
IDEMPOTENCY_KEY_LENGTH = 200
HASH_LENGTH = 64
SPAN_KIND_LENGTH = 32
KIND_LENGTH = 16

# Fixed constraint names make migrations reproducible: without them each database
# names unique and foreign key constraints its own way.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UtcDateTime(TypeDecorator[datetime]):
    """A timezone-aware datetime, stored in UTC and read back with `tzinfo=UTC`.

    PostgreSQL keeps the offset in `timestamp with time zone`. SQLite has no
    datetime type, so the value is stored as UTC text without an offset and the
    offset is put back when it is read.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"a naive datetime cannot be stored: {value}")
        value = value.astimezone(UTC)
        if dialect.name == "sqlite":
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class Base(DeclarativeBase):
    """Base of the models, whose metadata applies the naming convention."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class GenerationRequestRow(Base):
    """One request, from its start to its success or failure.

    `kind` is "generation" for a lesson generation, which has its course, subject
    and topic, or "passthrough" for a client's call forwarded to a key, which has
    none of them. A forwarded call's `input` holds only the model it named, its
    `max_tokens` and its number of messages, never the messages themselves.
    """

    __tablename__ = "generation_requests"
    __table_args__ = (
        CheckConstraint("status IN ('running', 'succeeded', 'failed')", name="status"),
        CheckConstraint("kind IN ('generation', 'passthrough')", name="kind"),
        Index("ix_generation_requests_topic", "course_id", "subject_name", "topic_name"),
        # For the list of recent requests and for pruning old traces.
        Index("ix_generation_requests_created_at", "created_at"),
    )

    id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    kind: Mapped[str] = mapped_column(
        String(KIND_LENGTH), default="generation", server_default="generation"
    )
    course_id: Mapped[str | None] = mapped_column(String(NAME_LENGTH))
    subject_name: Mapped[str | None] = mapped_column(String(NAME_LENGTH))
    topic_name: Mapped[str | None] = mapped_column(String(NAME_LENGTH))
    input: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16))
    error_code: Mapped[str | None] = mapped_column(String(CODE_LENGTH))
    error_message: Mapped[str | None] = mapped_column(String(ERROR_MESSAGE_LENGTH))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    duration_ms: Mapped[int | None] = mapped_column(Integer)
    # none_as_null stores SQL NULL for None, not the JSON text "null".
    steps: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON(none_as_null=True))


class GeneratedTopicRow(Base):
    """The topic a succeeded request produced; at most one per request."""

    __tablename__ = "generated_topics"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    request_id: Mapped[str] = mapped_column(
        String(ID_LENGTH), ForeignKey("generation_requests.id"), unique=True
    )
    content: Mapped[dict[str, Any]] = mapped_column(JSON)
    prompt_version: Mapped[str] = mapped_column(String(CODE_LENGTH))
    provider: Mapped[str] = mapped_column(String(CODE_LENGTH))
    model: Mapped[str] = mapped_column(String(NAME_LENGTH))
    prompt_tokens: Mapped[int] = mapped_column(Integer)
    completion_tokens: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())


class LlmCallRow(Base):
    """One attempt to get a completion from one key, successful or not."""

    __tablename__ = "llm_calls"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    request_id: Mapped[str] = mapped_column(
        String(ID_LENGTH), ForeignKey("generation_requests.id"), index=True
    )
    step: Mapped[str] = mapped_column(String(NAME_LENGTH))
    key_name: Mapped[str] = mapped_column(String(CODE_LENGTH))
    deployment: Mapped[str] = mapped_column(String(NAME_LENGTH))
    attempt: Mapped[int] = mapped_column(Integer)
    latency_ms: Mapped[float] = mapped_column(Float)
    prompt_tokens: Mapped[int] = mapped_column(Integer)
    completion_tokens: Mapped[int] = mapped_column(Integer)
    outcome: Mapped[str] = mapped_column(String(CODE_LENGTH))
    started_at: Mapped[datetime] = mapped_column(UtcDateTime())
    # The call's place in the request's trace; NULL for calls stored before traces.
    span_id: Mapped[int | None] = mapped_column(Integer)
    parent_id: Mapped[int | None] = mapped_column(Integer)


class TraceSpanRow(Base):
    """One span of a request's trace, other than its steps and LLM calls.

    Steps are stored in `generation_requests.steps` and LLM calls in `llm_calls`,
    each with its span id, so a trace is these rows and those together.
    """

    __tablename__ = "trace_spans"

    request_id: Mapped[str] = mapped_column(
        String(ID_LENGTH), ForeignKey("generation_requests.id"), primary_key=True
    )
    span_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    parent_id: Mapped[int | None] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(String(NAME_LENGTH))
    kind: Mapped[str] = mapped_column(String(SPAN_KIND_LENGTH))
    started_at: Mapped[datetime] = mapped_column(UtcDateTime())
    finished_at: Mapped[datetime] = mapped_column(UtcDateTime())
    attributes: Mapped[dict[str, Any]] = mapped_column(JSON)


class JobRow(Base):
    """A background job: one generation, or the topics of a course. Its items do the work.

    A job's status and progress are computed from its items when it is read.
    """

    __tablename__ = "jobs"
    __table_args__ = (CheckConstraint("kind IN ('generation', 'course')", name="kind"),)

    id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    # NULL for a job submitted without a key; unique otherwise, so a re-submission finds it.
    idempotency_key: Mapped[str | None] = mapped_column(String(IDEMPOTENCY_KEY_LENGTH), unique=True)
    # SHA-256 of the submitted body, to tell a re-submission from another job under one key.
    body_hash: Mapped[str] = mapped_column(String(HASH_LENGTH))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    cancelled_at: Mapped[datetime | None] = mapped_column(UtcDateTime())


class JobItemRow(Base):
    """One generation request of a job, claimed by one attempt at a time.

    `attempt` counts the claims and fences writes: an attempt writes only while the
    row still carries its number and the status `running`. `request_id` is the
    generation request of the latest attempt, which is the one that succeeded when
    the status is `succeeded`. A pending item with `not_before` set waits until then
    for its next claim: an attempt that failed for a passing cause (no key free in
    time, say) puts it back that way.
    """

    __tablename__ = "job_items"
    __table_args__ = (
        CheckConstraint(
            "status IN ('pending', 'running', 'succeeded', 'failed', 'cancelled')",
            name="status",
        ),
        UniqueConstraint("job_id", "position", name="uq_job_items_job_id_position"),
        Index("ix_job_items_claim", "status", "lease_expires_at"),
    )

    id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    job_id: Mapped[str] = mapped_column(String(ID_LENGTH), ForeignKey("jobs.id"))
    position: Mapped[int] = mapped_column(Integer)
    request: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16))
    attempt: Mapped[int] = mapped_column(Integer)
    lease_expires_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    not_before: Mapped[datetime | None] = mapped_column(UtcDateTime())
    request_id: Mapped[str | None] = mapped_column(String(ID_LENGTH), unique=True)
    error_code: Mapped[str | None] = mapped_column(String(CODE_LENGTH))
    error_message: Mapped[str | None] = mapped_column(String(ERROR_MESSAGE_LENGTH))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    started_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
