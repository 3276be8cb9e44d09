"""Store request traces: the trace_spans table, span ids on llm_calls, requests by time.

Revision ID: 0003
Revises: 0001
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "trace_spans",
        sa.Column("request_id", sa.String(length=32), nullable=False),
        sa.Column("span_id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("parent_id", sa.Integer(), nullable=True),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("attributes", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(
            ["request_id"],
            ["generation_requests.id"],
            name=op.f("fk_trace_spans_request_id_generation_requests"),
        ),
        sa.PrimaryKeyConstraint("request_id", "span_id", name=op.f("pk_trace_spans")),
    )
    # Nullable columns are added in place on both SQLite and PostgreSQL.
    op.add_column("llm_calls", sa.Column("span_id", sa.Integer(), nullable=True))
    op.add_column("llm_calls", sa.Column("parent_id", sa.Integer(), nullable=True))
    op.create_index("ix_generation_requests_created_at", "generation_requests", ["created_at"])


def downgrade() -> None:
    op.drop_index("ix_generation_requests_created_at", table_name="generation_requests")
    # Batch mode, because SQLite drops a column by rebuilding the table.
    with op.batch_alter_table("llm_calls") as batch:
        batch.drop_column("parent_id")
        batch.drop_column("span_id")
    op.drop_table("trace_spans")
