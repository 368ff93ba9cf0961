"""Tenants with API keys; sessions of named identities (tenant users, IdP subjects).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-21
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from sessiongate.store.models import UTCDateTime

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "tenants",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("name", sa.String(100), nullable=False, unique=True),
        sa.Column("api_key_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("api_key_prefix", sa.String(16), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("revoked_at", UTCDateTime(), nullable=True),
    )
    with op.batch_alter_table("sessions") as batch:
        batch.add_column(
            sa.Column("kind", sa.String(16), nullable=False, server_default="anonymous")
        )
        batch.add_column(sa.Column("tenant_id", sa.String(32), nullable=True))
        batch.add_column(sa.Column("issuer", sa.String(255), nullable=True))
        batch.add_column(sa.Column("external_user", sa.String(255), nullable=True))
        batch.add_column(sa.Column("principal", sa.String(600), nullable=True))
        batch.create_foreign_key(
            "fk_sessions_tenant", "tenants", ["tenant_id"], ["id"], ondelete="CASCADE"
        )
        batch.create_unique_constraint("uq_sessions_principal", ["principal"])
    op.create_index("ix_sessions_tenant_id", "sessions", ["tenant_id"])
    op.create_index("ix_sessions_last_active", "sessions", ["last_active_at", "id"])


def downgrade() -> None:
    op.drop_index("ix_sessions_last_active", "sessions")
    op.drop_index("ix_sessions_tenant_id", "sessions")
    with op.batch_alter_table("sessions") as batch:
        batch.drop_constraint("uq_sessions_principal", type_="unique")
        batch.drop_constraint("fk_sessions_tenant", type_="foreignkey")
        for column in ("principal", "external_user", "issuer", "tenant_id", "kind"):
            batch.drop_column(column)
    op.drop_table("tenants")
