"""Session coordination on the shared database: lease rows (``store.leases``).

Correct for any number of processes on one SQLite file or one PostgreSQL database, at
the price of a few small writes per turn. A session's lock is the lease
``lock:<session id>``; its turns in progress are the leases ``turn:<session id>:<k>``,
``k < limit`` (a turn takes the first free slot).
"""

from __future__ import annotations

from sqlalchemy import delete
from sqlalchemy.ext.asyncio import async_sessionmaker

from ..store import DbSession
from ..store.leases import acquire_lease, lease_is_live, release_lease, renew_lease
from ..store.models import LeaseRow
from .base import LockLease


class DatabaseCoordinator:
    """``Coordinator`` on lease rows of the shared database."""

    def __init__(self, sessionmaker: async_sessionmaker[DbSession]) -> None:
        self._sessionmaker = sessionmaker

    async def try_lock(self, session_id: str, token: str, *, ttl: float) -> LockLease | None:
        if await acquire_lease(self._sessionmaker, f"lock:{session_id}", token, seconds=ttl):
            return LockLease(session_id, token)
        return None

    async def renew(self, lease: LockLease, *, ttl: float) -> bool:
        return await renew_lease(
            self._sessionmaker, f"lock:{lease.session_id}", lease.token, seconds=ttl
        )

    async def unlock(self, lease: LockLease) -> None:
        await release_lease(self._sessionmaker, f"lock:{lease.session_id}", lease.token)

    async def is_locked(self, session_id: str) -> bool:
        return await lease_is_live(self._sessionmaker, f"lock:{session_id}")

    async def admit(self, session_id: str, turn_id: str, *, limit: int, ttl: float) -> bool:
        for slot in range(limit):
            if await acquire_lease(
                self._sessionmaker, f"turn:{session_id}:{slot}", turn_id, seconds=ttl
            ):
                return True
        return False

    async def leave(self, session_id: str, turn_id: str) -> None:
        async with self._sessionmaker() as db, db.begin():
            await db.execute(
                delete(LeaseRow).where(
                    LeaseRow.name.startswith(f"turn:{session_id}:", autoescape=True),
                    LeaseRow.holder == turn_id,
                )
            )

    async def unlock_and_leave(self, lease: LockLease, turn_id: str) -> None:
        try:
            await self.unlock(lease)
        finally:  # a failed unlock must not keep the turn's admission slot
            await self.leave(lease.session_id, turn_id)

    async def aclose(self) -> None:
        return None


__all__ = ["DatabaseCoordinator"]
