"""Turns across processes: atomic message positions, replies saved as they grow, stop.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-21
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("conversations") as batch:
        batch.add_column(
            sa.Column("next_position", sa.Integer(), nullable=False, server_default="0")
        )
    op.execute(
        "UPDATE conversations SET next_position = COALESCE("
        "(SELECT MAX(position) FROM messages WHERE messages.conversation_id = conversations.id), 0)"
    )
    with op.batch_alter_table("messages") as batch:
        batch.add_column(sa.Column("finish_reason", sa.String(16), nullable=True))
        batch.add_column(
            sa.Column("stop_requested", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch.create_index("ix_messages_status", ["status"])


def downgrade() -> None:
    with op.batch_alter_table("messages") as batch:
        batch.drop_index("ix_messages_status")
        batch.drop_column("stop_requested")
        batch.drop_column("finish_reason")
    with op.batch_alter_table("conversations") as batch:
        batch.drop_column("next_position")
