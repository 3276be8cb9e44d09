"""Let a job item wait before its next attempt: job_items.not_before.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-04
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # A nullable column is added in place on both SQLite and PostgreSQL.
    op.add_column("job_items", sa.Column("not_before", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    # Batch mode, because SQLite drops a column by rebuilding the table.
    with op.batch_alter_table("job_items") as batch:
        batch.drop_column("not_before")
