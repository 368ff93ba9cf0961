"""Persistence: models, the engine, migrations and session-keyed queries."""

from .database import (
    DbSession,
    create_engine,
    create_sessionmaker,
    migrate,
    migrate_sync,
    read_engine,
)
from .models import Base, ConversationRow, MessageRow, SessionRow, TenantRow

__all__ = [
    "Base",
    "ConversationRow",
    "DbSession",
    "MessageRow",
    "SessionRow",
    "TenantRow",
    "create_engine",
    "create_sessionmaker",
    "migrate",
    "migrate_sync",
    "read_engine",
]
