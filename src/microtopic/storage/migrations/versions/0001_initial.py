"""Create the generation_requests, generated_topics and llm_calls tables.

Revision ID: 0001
Revises:
Create Date: 2026-12-04
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "generation_requests",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("course_id", sa.String(length=200), nullable=False),
        sa.Column("subject_name", sa.String(length=200), nullable=False),
        sa.Column("topic_name", sa.String(length=200), nullable=False),
        sa.Column("input", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("error_code", sa.String(length=64), nullable=True),
        sa.Column("error_message", sa.String(length=2000), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("duration_ms", sa.Integer(), nullable=True),
        sa.Column("steps", sa.JSON(), nullable=True),
        sa.CheckConstraint(
            "status IN ('running', 'succeeded', 'failed')",
            name=op.f("ck_generation_requests_status"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_generation_requests")),
    )
    op.create_index(
        "ix_generation_requests_topic",
        "generation_requests",
        ["course_id", "subject_name", "topic_name"],
    )

    op.create_table(
        "generated_topics",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("request_id", sa.String(length=32), nullable=False),
        sa.Column("content", sa.JSON(), nullable=False),
        sa.Column("prompt_version", sa.String(length=64), nullable=False),
        sa.Column("provider", sa.String(length=64), nullable=False),
        sa.Column("model", sa.String(length=200), nullable=False),
        sa.Column("prompt_tokens", sa.Integer(), nullable=False),
        sa.Column("completion_tokens", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["request_id"],
            ["generation_requests.id"],
            name=op.f("fk_generated_topics_request_id_generation_requests"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_generated_topics")),
        sa.UniqueConstraint("request_id", name=op.f("uq_generated_topics_request_id")),
    )

    op.create_table(
        "llm_calls",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("request_id", sa.String(length=32), nullable=False),
        sa.Column("step", sa.String(length=200), nullable=False),
        sa.Column("key_name", sa.String(length=64), nullable=False),
        sa.Column("deployment", sa.String(length=200), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("latency_ms", sa.Float(), nullable=False),
        sa.Column("prompt_tokens", sa.Integer(), nullable=False),
        sa.Column("completion_tokens", sa.Integer(), nullable=False),
        sa.Column("outcome", sa.String(length=64), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["request_id"],
            ["generation_requests.id"],
            name=op.f("fk_llm_calls_request_id_generation_requests"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_llm_calls")),
    )
    op.create_index(op.f("ix_llm_calls_request_id"), "llm_calls", ["request_id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_llm_calls_request_id"), table_name="llm_calls")
    op.drop_table("llm_calls")
    op.drop_table("generated_topics")
    op.drop_index("ix_generation_requests_topic", table_name="generation_requests")
    op.drop_table("generation_requests")
