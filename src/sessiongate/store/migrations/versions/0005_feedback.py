"""Feedback: the end user's rating of a reply (up/down) and when it was given.

Revision ID: 0005_feedback
Revises: 0004
Create Date: 2026-11-21
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from sessiongate.store.models import UTCDateTime

revision: str = "0005_feedback"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("messages") as batch:
        batch.add_column(sa.Column("feedback", sa.String(8), nullable=True))
        batch.add_column(sa.Column("feedback_at", UTCDateTime(), nullable=True))
    # Operators list rated replies newest first (admin dashboard, /api/admin/feedback).
    op.create_index("ix_messages_feedback", "messages", ["feedback", "feedback_at"])


def downgrade() -> None:
    op.drop_index("ix_messages_feedback", table_name="messages")
    with op.batch_alter_table("messages") as batch:
        batch.drop_column("feedback_at")
        batch.drop_column("feedback")
