"""The coordination port: per-session rules that must hold across every process.

A ``Coordinator`` (the shared half) is implemented on the database
(``DatabaseCoordinator``: lease rows, correct for several processes on one SQLite file
or PostgreSQL) and on Redis (``RedisCoordinator``: keys with expiry and a fencing
counter). ``SessionCoordination`` puts an in-process FIFO lock in front of it, so
turns of one session queued in the same process wait on an ``asyncio.Lock`` instead
of polling the shared store, and keeps each held lock renewed until it is released
(from a third of its TTL on: a turn shorter than that never starts a renewer).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Protocol

import anyio

from ..errors import SessionBusy
from ..store.models import new_id
from ..tasks import Deferred

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class LockLease:
    """A held session lock: ``token`` identifies the holder; ``fence`` grows by one each
    time the lock changes hands (0 where the backend has no counter)."""

    session_id: str
    token: str
    fence: int = 0


class Coordinator(Protocol):
    """The shared half of session coordination. Durations are seconds."""

    async def try_lock(self, session_id: str, token: str, *, ttl: float) -> LockLease | None:
        """Take the session's lock for ``ttl`` seconds, or None if another holder has it."""
        ...

    async def renew(self, lease: LockLease, *, ttl: float) -> bool:
        """Extend a held lock; False if it lapsed and was taken over."""
        ...

    async def unlock(self, lease: LockLease) -> None:
        """Release the lock if ``lease`` still holds it."""
        ...

    async def is_locked(self, session_id: str) -> bool:
        """Whether any live holder has the session's lock."""
        ...

    async def admit(self, session_id: str, turn_id: str, *, limit: int, ttl: float) -> bool:
        """Count ``turn_id`` among the session's turns in progress unless ``limit`` are;
        an entry lapses after ``ttl`` seconds if never left (its process died)."""
        ...

    async def leave(self, session_id: str, turn_id: str) -> None:
        """Remove ``turn_id`` from the session's turns in progress."""
        ...

    async def unlock_and_leave(self, lease: LockLease, turn_id: str) -> None:
        """``unlock`` and ``leave`` together (one round trip where the backend can)."""
        ...

    async def aclose(self) -> None: ...


@dataclass(slots=True)
class HeldLock:
    """A session lock held by this process, kept alive until ``release`` is awaited.

    ``lost`` turns true if a renewal found the lock taken over (the process stalled
    longer than the lock's TTL); the turn's final write then finds its row already
    marked ``interrupted`` and changes nothing.
    """

    lease: LockLease
    _owner: SessionCoordination
    _local: asyncio.Lock
    _renewer: Deferred | None = None
    _released: bool = False
    _stopping: asyncio.Event = field(default_factory=asyncio.Event)
    lost: bool = field(default=False)

    async def release(self, *, leaving: str | None = None) -> None:
        """Stop renewing and release the lock; with ``leaving`` (a turn id) also leave
        the session's turns in progress, in the same round trip."""
        if self._released:
            return
        self._released = True
        with anyio.CancelScope(shield=True):
            self._stopping.set()
            if self._renewer is not None:
                # A renewal in flight (a database write, with DatabaseCoordinator) is let
                # finish rather than cancelled mid-write.
                await self._renewer.stop(grace=self._owner.lock_ttl)
            backend = self._owner.backend
            try:
                if leaving is None:
                    await backend.unlock(self.lease)
                else:
                    await backend.unlock_and_leave(self.lease, leaving)
            except Exception:  # the lock and the turn's entry lapse by themselves
                log.exception("could not release the lock of session %s", self.lease.session_id)
            finally:
                self._local.release()
                self._owner._local_done(self.lease.session_id)


class SessionCoordination:
    """Session locks (in-process FIFO in front of the shared ``backend``) and admission.

    ``lock_ttl``: seconds a lock lives without renewal; held locks are renewed every
    third of it. Waiting polls the shared store with a backoff of 10 ms up to 200 ms.
    """

    def __init__(self, backend: Coordinator, *, lock_ttl: float) -> None:
        self.backend = backend
        self.lock_ttl = lock_ttl
        self._local: dict[str, tuple[asyncio.Lock, int]] = {}

    async def acquire(self, session_id: str, *, wait: float) -> HeldLock:
        """Hold the session's lock, waiting at most ``wait`` seconds.

        Raises ``SessionBusy`` (409 ``session_busy``) when the running turn of this
        session (on any process) does not finish in time.
        """
        deadline = time.monotonic() + wait
        lock, users = self._local.get(session_id, (asyncio.Lock(), 0))
        self._local[session_id] = (lock, users + 1)
        try:
            try:
                async with asyncio.timeout(max(wait, 0)):
                    await lock.acquire()
            except TimeoutError:
                raise _busy() from None
            try:
                lease = await self._acquire_shared(session_id, deadline)
            except BaseException:
                lock.release()
                raise
        except BaseException:
            self._local_done(session_id)
            raise
        held = HeldLock(lease, self, lock)
        held._renewer = Deferred(
            self.lock_ttl / 3, lambda: self._renew(held), name=f"lock-{session_id}"
        )
        return held

    @contextlib.asynccontextmanager
    async def hold(self, session_id: str, *, wait: float) -> AsyncIterator[HeldLock]:
        """``acquire`` as a context manager (reset, delete, erase)."""
        held = await self.acquire(session_id, wait=wait)
        try:
            yield held
        finally:
            await held.release()

    async def _acquire_shared(self, session_id: str, deadline: float) -> LockLease:
        token = new_id()
        delay = 0.01
        while True:
            lease = await self.backend.try_lock(session_id, token, ttl=self.lock_ttl)
            if lease is not None:
                return lease
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise _busy()
            await asyncio.sleep(min(delay, remaining))
            delay = min(delay * 2, 0.2)

    async def _renew(self, held: HeldLock) -> None:
        # Started a third of the TTL after the lock was taken (``Deferred``): renew first.
        while not held._stopping.is_set():
            try:
                if not await self.backend.renew(held.lease, ttl=self.lock_ttl):
                    held.lost = True
                    log.warning("lost the lock of session %s", held.lease.session_id)
                    return
            except Exception:
                log.exception("could not renew the lock of session %s", held.lease.session_id)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.lock_ttl / 3):
                    await held._stopping.wait()

    def _local_done(self, session_id: str) -> None:
        lock, users = self._local[session_id]
        if users <= 1:
            del self._local[session_id]
        else:
            self._local[session_id] = (lock, users - 1)

    async def is_locked(self, session_id: str) -> bool:
        """Whether a turn (or reset, delete, erase) of the session runs anywhere."""
        return session_id in self._local or await self.backend.is_locked(session_id)

    async def admit(self, session_id: str, turn_id: str, *, limit: int, ttl: float) -> bool:
        """See ``Coordinator.admit``."""
        return await self.backend.admit(session_id, turn_id, limit=limit, ttl=ttl)

    async def leave(self, session_id: str, turn_id: str) -> None:
        with anyio.CancelScope(shield=True):
            try:
                await self.backend.leave(session_id, turn_id)
            except Exception:  # the entry lapses by itself after its TTL
                log.exception("could not release a turn slot of session %s", session_id)

    async def aclose(self) -> None:
        await self.backend.aclose()


def _busy() -> SessionBusy:
    return SessionBusy(
        "Another reply in this session is still being written; try again when it is done.",
        code="session_busy",
        retry_after=1,
    )


__all__ = ["Coordinator", "HeldLock", "LockLease", "SessionCoordination"]
