"""SQLAlchemy models: sessions, their conversations, and the conversations' messages.

Every user-data row carries ``session_id`` so that every query can be keyed by it.
Timestamps are timezone-aware UTC on the way out, whatever the database stores.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy import false as sa_false
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class UTCDateTime(TypeDecorator[datetime]):
    """A DateTime stored as UTC and always returned timezone-aware (SQLite drops tz)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTCDateTime column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def new_id() -> str:
    """A new random public id: 32 lowercase hex characters (UUID4)."""
    return uuid.uuid4().hex


def utcnow() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


class Base(DeclarativeBase):
    pass


class TenantRow(Base):
    """An application that uses the gateway; it owns one current API key (stored as a hash).

    Keys replaced by a rotation that still work for a grace period are ``TenantKeyRow``s.
    ``allow_system_prompt``: whether the tenant's clients may send their own system prompt.
    """

    __tablename__ = "tenants"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    # SHA-256 of the key: keys are 256-bit random, so a fast hash is enough.
    api_key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    api_key_prefix: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    allow_system_prompt: Mapped[bool] = mapped_column(Boolean, default=False)


class TenantKeyRow(Base):
    """A tenant's previous API key, replaced by a rotation, accepted until ``expires_at``."""

    __tablename__ = "tenant_keys"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("tenants.id", ondelete="CASCADE"), index=True
    )
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    key_prefix: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())


class SessionRow(Base):
    """One identity's space: its conversations, memory and upstream identity.

    ``kind``: ``anonymous`` (a browser or API client holding a session token),
    ``tenant`` (a tenant's API-key caller naming ``external_user``) or ``idp`` (an
    identity-provider JWT: ``issuer`` and subject ``external_user``). ``principal`` is
    the unique key of a named identity (NULL for anonymous sessions): one live session
    per (tenant, user) and per (issuer, subject).
    """

    __tablename__ = "sessions"
    __table_args__ = (Index("ix_sessions_last_active", "last_active_at", "id"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    # Opaque and unique across everything the gateway serves; sent upstream (Coze JWT).
    session_name: Mapped[str] = mapped_column(String(64), unique=True)
    kind: Mapped[str] = mapped_column(String(16), default="anonymous")
    tenant_id: Mapped[str | None] = mapped_column(
        String(32), ForeignKey("tenants.id", ondelete="CASCADE"), nullable=True, index=True
    )
    issuer: Mapped[str | None] = mapped_column(String(255), nullable=True)
    external_user: Mapped[str | None] = mapped_column(String(255), nullable=True)
    principal: Mapped[str | None] = mapped_column(String(600), unique=True, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    last_active_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)


class ConversationRow(Base):
    """An ordered list of messages inside one session."""

    __tablename__ = "conversations"
    __table_args__ = (Index("ix_conversations_session_updated", "session_id", "updated_at"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    session_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("sessions.id", ondelete="CASCADE")
    )
    title: Mapped[str | None] = mapped_column(String(120), nullable=True)
    # The provider's own conversation id bound to this one (Coze upstream history mode).
    upstream_conversation_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    # The highest message position handed out; a turn takes the next two in one UPDATE,
    # so positions stay unique and gap-free however many processes write.
    next_position: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class MessageRow(Base):
    """One message. ``position`` orders a conversation; ``status`` tells how a reply ended.

    ``status``: ``complete``; ``streaming`` (being generated now; its text is saved as it
    grows); ``incomplete`` (stopped by the user or cut at the reply cap, the partial
    text is kept; ``finish_reason`` says which); ``error`` (the provider failed;
    ``error_code`` and ``upstream_logid`` say why); ``interrupted`` (the process running
    the turn died; found and marked by the recovery sweep).
    """

    __tablename__ = "messages"
    __table_args__ = (
        UniqueConstraint("conversation_id", "position", name="uq_messages_conversation_position"),
        Index("ix_messages_session", "session_id"),
        Index("ix_messages_status", "status"),
        Index("ix_messages_feedback", "feedback", "feedback_at"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    session_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("sessions.id", ondelete="CASCADE")
    )
    conversation_id: Mapped[str] = mapped_column(
        String(32), ForeignKey("conversations.id", ondelete="CASCADE")
    )
    position: Mapped[int] = mapped_column(Integer)
    role: Mapped[str] = mapped_column(String(16))
    content: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), default="complete")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    prompt_tokens: Mapped[int | None] = mapped_column(Integer, nullable=True)
    completion_tokens: Mapped[int | None] = mapped_column(Integer, nullable=True)
    error_code: Mapped[str | None] = mapped_column(String(64), nullable=True)
    upstream_logid: Mapped[str | None] = mapped_column(String(128), nullable=True)
    # ``stop`` or ``length`` (token limit or reply cap), or ``cancelled`` (stopped).
    finish_reason: Mapped[str | None] = mapped_column(String(16), nullable=True)
    # Set by ``POST /api/conversations/{id}/stop`` on any replica; the running turn reads
    # it back each time it saves its progress.
    stop_requested: Mapped[bool] = mapped_column(default=False, server_default=sa_false())
    # The end user's rating of a reply: "up", "down" or NULL (store/feedback.py).
    feedback: Mapped[str | None] = mapped_column(String(8), nullable=True)
    feedback_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class LeaseRow(Base):
    """A named lock held by ``holder`` until ``expires_at`` (works across processes)."""

    __tablename__ = "leases"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    holder: Mapped[str] = mapped_column(String(64))
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())


__all__ = [
    "Base",
    "LeaseRow",
    "ConversationRow",
    "MessageRow",
    "SessionRow",
    "TenantKeyRow",
    "TenantRow",
    "UTCDateTime",
    "new_id",
    "utcnow",
]
