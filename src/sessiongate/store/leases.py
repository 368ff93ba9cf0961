"""Leases: named locks with an expiry in the shared database, for any number of processes.

A lease is one row ``(name, holder, expires_at)``. Taking it is an INSERT, or an UPDATE
conditioned on the old lease having expired (or being ours); exactly one contender's
statement succeeds on SQLite and on PostgreSQL alike. A holder that dies simply stops
renewing, and its lease lapses at ``expires_at``.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import async_sessionmaker

from .database import DbSession
from .models import LeaseRow, utcnow


async def acquire_lease(
    sessionmaker: async_sessionmaker[DbSession],
    name: str,
    holder: str,
    *,
    seconds: float = 300,
    now: datetime | None = None,
) -> bool:
    """Take (or renew) lease ``name`` for ``holder`` for ``seconds``; False if another
    holder has a live one. ``name`` is at most 64 characters."""
    now = now or utcnow()
    until = now + timedelta(seconds=seconds)
    try:
        async with sessionmaker() as db, db.begin():
            db.add(LeaseRow(name=name, holder=holder, expires_at=until))
        return True
    except IntegrityError:
        pass
    async with sessionmaker() as db, db.begin():
        result: Any = await db.execute(
            update(LeaseRow)
            .where(
                LeaseRow.name == name,
                (LeaseRow.expires_at <= now) | (LeaseRow.holder == holder),
            )
            .values(holder=holder, expires_at=until)
        )
        return bool(result.rowcount == 1)


async def renew_lease(
    sessionmaker: async_sessionmaker[DbSession], name: str, holder: str, *, seconds: float
) -> bool:
    """Push ``holder``'s lease ``name`` out by ``seconds``; False if it is no longer ours."""
    async with sessionmaker() as db, db.begin():
        result: Any = await db.execute(
            update(LeaseRow)
            .where(LeaseRow.name == name, LeaseRow.holder == holder)
            .values(expires_at=utcnow() + timedelta(seconds=seconds))
        )
        return bool(result.rowcount == 1)


async def release_lease(
    sessionmaker: async_sessionmaker[DbSession], name: str, holder: str
) -> None:
    """Give lease ``name`` back if ``holder`` still holds it."""
    async with sessionmaker() as db, db.begin():
        await db.execute(delete(LeaseRow).where(LeaseRow.name == name, LeaseRow.holder == holder))


async def lease_is_live(
    sessionmaker: async_sessionmaker[DbSession], name: str, *, now: datetime | None = None
) -> bool:
    """Whether someone holds an unexpired lease ``name``."""
    now = now or utcnow()
    async with sessionmaker() as db:
        found = await db.scalar(
            select(LeaseRow.name).where(LeaseRow.name == name, LeaseRow.expires_at > now)
        )
    return found is not None


__all__ = ["acquire_lease", "lease_is_live", "release_lease", "renew_lease"]
