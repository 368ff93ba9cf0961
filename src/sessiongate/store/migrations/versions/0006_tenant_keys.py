"""Tenant key rotation: previous keys with an expiry; tenants may allow a client system prompt.

Revision ID: 0006_tenant_keys
Revises: 0005_feedback
Create Date: 2026-11-21
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from sessiongate.store.models import UTCDateTime

revision: str = "0006_tenant_keys"
down_revision: str | None = "0005_feedback"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "tenant_keys",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column(
            "tenant_id",
            sa.String(32),
            sa.ForeignKey("tenants.id", ondelete="CASCADE", name="fk_tenant_keys_tenant"),
            nullable=False,
        ),
        sa.Column("key_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("key_prefix", sa.String(16), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
    )
    op.create_index("ix_tenant_keys_tenant_id", "tenant_keys", ["tenant_id"])
    with op.batch_alter_table("tenants") as batch:
        batch.add_column(
            sa.Column(
                "allow_system_prompt", sa.Boolean(), nullable=False, server_default=sa.false()
            )
        )


def downgrade() -> None:
    with op.batch_alter_table("tenants") as batch:
        batch.drop_column("allow_system_prompt")
    op.drop_index("ix_tenant_keys_tenant_id", "tenant_keys")
    op.drop_table("tenant_keys")
