"""The database engine and migrations.

SQLite (the default, through aiosqlite) runs in WAL mode with foreign keys on and a
busy timeout, so concurrent turns of different sessions don't fail with "database is
locked". PostgreSQL runs through asyncpg with the same code.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlalchemy.ext.asyncio import AsyncSession as DbSession

_MIGRATIONS = Path(__file__).parent / "migrations"


def create_engine(database_url: str) -> AsyncEngine:
    """Create the async engine: ``sqlite+aiosqlite://...`` or ``postgresql+asyncpg://...``."""
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite":
        if url.database not in (None, "", ":memory:"):
            Path(url.database).resolve().parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(url, connect_args={"timeout": 30})

        @event.listens_for(engine.sync_engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

        return engine
    return create_async_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)


def create_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[DbSession]:
    """A factory of database sessions that keep loaded rows usable after commit."""
    return async_sessionmaker(engine, expire_on_commit=False)


def _alembic_config(database_url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(_MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    cfg.attributes["configure_logger"] = False
    return cfg


def migrate_sync(database_url: str, revision: str = "head") -> None:
    """Apply Alembic migrations up to ``revision``; blocking (runs its own event loop)."""
    command.upgrade(_alembic_config(database_url), revision)


async def migrate(database_url: str, revision: str = "head") -> None:
    """Apply Alembic migrations from async code (in a worker thread)."""
    await asyncio.to_thread(migrate_sync, database_url, revision)


__all__ = ["DbSession", "create_engine", "create_sessionmaker", "migrate", "migrate_sync"]
