"""Store forwarded calls as requests: generation_requests.kind, topic columns nullable.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TOPIC_COLUMNS = ("course_id", "subject_name", "topic_name")


def upgrade() -> None:
    # Batch mode, because SQLite changes a column's nullability and adds a check
    # constraint only by rebuilding the table. PostgreSQL alters it in place.
    with op.batch_alter_table("generation_requests") as batch:
        batch.add_column(
            sa.Column("kind", sa.String(length=16), server_default="generation", nullable=False)
        )
        for name in TOPIC_COLUMNS:
            batch.alter_column(name, existing_type=sa.String(length=200), nullable=True)
        batch.create_check_constraint(
            op.f("ck_generation_requests_kind"), "kind IN ('generation', 'passthrough')"
        )


def downgrade() -> None:
    # Forwarded calls have no topic, so they cannot stay once the columns are NOT NULL.
    requests = "SELECT id FROM generation_requests WHERE kind = 'passthrough'"
    for table in ("trace_spans", "llm_calls"):
        op.execute(f"DELETE FROM {table} WHERE request_id IN ({requests})")
    op.execute("DELETE FROM generation_requests WHERE kind = 'passthrough'")
    with op.batch_alter_table("generation_requests") as batch:
        batch.drop_constraint(op.f("ck_generation_requests_kind"), type_="check")
        for name in TOPIC_COLUMNS:
            batch.alter_column(name, existing_type=sa.String(length=200), nullable=False)
        batch.drop_column("kind")
