"""Apply migrations once, whichever of several processes starting together gets there first.

Replicas (and ``sessiongate serve`` started twice on one machine) may start at the same
moment on an empty database; two Alembic upgrades at once fail on the second
``CREATE TABLE`` or write two ``alembic_version`` rows. Migrating under a lock makes the
first process apply them and every other one wait, then find the schema at head:

* PostgreSQL: a session-level advisory lock (``pg_advisory_lock``) held on its own
  connection while Alembic runs on another.
* SQLite: an exclusive ``flock`` on ``<database file>.migrate-lock`` beside the file
  (every process that can open the database can take it). In-memory databases belong to
  one process and need no lock.
"""

from __future__ import annotations

import asyncio
import fcntl
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from .database import migrate_sync

#: A fixed 64-bit key, the same in every process of every version (PostgreSQL advisory locks).
ADVISORY_LOCK_KEY = 0x5E55_1046_A7E0_0001


def migration_lock_path(database_url: str) -> Path | None:
    """The lock file of a SQLite database file; None for other databases and ``:memory:``."""
    url = make_url(database_url)
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        return None
    database = Path(url.database).resolve()
    return database.with_name(database.name + ".migrate-lock")


def _migrate_under_file_lock(database_url: str, lock_path: Path) -> None:
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with lock_path.open("a") as lock:
        # Blocks until the process migrating now is done (the kernel releases the lock
        # if that process dies, so a crashed migration never wedges the others).
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        try:
            migrate_sync(database_url)
        finally:
            fcntl.flock(lock.fileno(), fcntl.LOCK_UN)


async def migrate_exclusively(database_url: str) -> None:
    """Apply Alembic migrations up to head while holding the database's migration lock.

    Safe to call from any number of processes at once: exactly one applies the
    migrations, the others wait and then find nothing to do. Raises what Alembic and the
    database driver raise.
    """
    lock_path = migration_lock_path(database_url)
    if lock_path is not None:
        await asyncio.to_thread(_migrate_under_file_lock, database_url, lock_path)
        return
    if make_url(database_url).get_backend_name() != "postgresql":
        await asyncio.to_thread(migrate_sync, database_url)
        return
    engine = create_async_engine(database_url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    try:
        async with engine.connect() as conn:
            await conn.execute(text("SELECT pg_advisory_lock(:key)"), {"key": ADVISORY_LOCK_KEY})
            try:
                await asyncio.to_thread(migrate_sync, database_url)
            finally:
                await conn.execute(
                    text("SELECT pg_advisory_unlock(:key)"), {"key": ADVISORY_LOCK_KEY}
                )
    finally:
        await engine.dispose()


def migrate_exclusively_sync(database_url: str) -> None:
    """``migrate_exclusively`` from synchronous code (runs its own event loop)."""
    asyncio.run(migrate_exclusively(database_url))


__all__ = [
    "ADVISORY_LOCK_KEY",
    "migrate_exclusively",
    "migrate_exclusively_sync",
    "migration_lock_path",
]
