"""Session lifecycle: expiry cleanup (one runner at a time across processes), export,
erasure, and forgetting a session's cached upstream credentials.

Expiry itself is enforced where a session is loaded (``api.deps.resolve_session``); each
turn pushes ``expires_at`` forward by the idle TTL (``store.queries.touch_session``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import async_sessionmaker

from .chat import SessionLocks
from .store import ConversationRow, DbSession, MessageRow, SessionRow
from .store import queries as q
from .store.models import LeaseRow, new_id, utcnow

log = logging.getLogger(__name__)

CLEANUP_LEASE = "cleanup"
_LEASE_SECONDS = 300


@dataclass(frozen=True, slots=True)
class CleanupResult:
    """What one cleanup deleted. ``skipped``: another cleanup held the lease."""

    sessions: int = 0
    conversations: int = 0
    messages: int = 0
    skipped: bool = False


async def acquire_lease(
    sessionmaker: async_sessionmaker[DbSession],
    name: str,
    holder: str,
    *,
    seconds: int = _LEASE_SECONDS,
    now: datetime | None = None,
) -> bool:
    """Take lease ``name`` for ``holder`` unless someone else holds a live one.

    Portable (SQLite and PostgreSQL): an INSERT, or an UPDATE conditioned on the old
    lease having expired (or being ours); exactly one contender's statement succeeds.
    """
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


async def release_lease(
    sessionmaker: async_sessionmaker[DbSession], name: str, holder: str
) -> None:
    """Give lease ``name`` back if ``holder`` still holds it."""
    async with sessionmaker() as db, db.begin():
        await db.execute(delete(LeaseRow).where(LeaseRow.name == name, LeaseRow.holder == holder))


async def cleanup_expired_sessions(
    sessionmaker: async_sessionmaker[DbSession],
    *,
    batch_size: int = 500,
    now: datetime | None = None,
    forget: Callable[[Sequence[str]], Any] | None = None,
    progress: Callable[[int], None] | None = None,
) -> CleanupResult:
    """Delete every session expired at ``now`` with its conversations and messages.

    Works in transactions of at most ``batch_size`` sessions and yields to the event
    loop between them, so turns are never blocked for long. Only one cleanup runs at a
    time across all processes sharing the database (a lease); a second one returns
    ``skipped=True`` at once. ``forget(session_names)`` (may be async) drops cached
    upstream credentials of each deleted batch; ``progress(deleted_so_far)`` reports.
    """
    now = now or utcnow()
    holder = new_id()
    if not await acquire_lease(sessionmaker, CLEANUP_LEASE, holder):
        return CleanupResult(skipped=True)
    sessions = conversations = messages = 0
    try:
        while True:
            async with sessionmaker() as db, db.begin():
                rows = (
                    await db.execute(
                        select(SessionRow.id, SessionRow.session_name)
                        .where(SessionRow.expires_at <= now)
                        .order_by(SessionRow.expires_at, SessionRow.id)
                        .limit(batch_size)
                    )
                ).all()
                if not rows:
                    break
                ids = [row.id for row in rows]
                messages += _count(
                    await db.execute(delete(MessageRow).where(MessageRow.session_id.in_(ids)))
                )
                conversations += _count(
                    await db.execute(
                        delete(ConversationRow).where(ConversationRow.session_id.in_(ids))
                    )
                )
                sessions += _count(
                    await db.execute(delete(SessionRow).where(SessionRow.id.in_(ids)))
                )
            if forget is not None:
                outcome = forget([row.session_name for row in rows])
                if asyncio.iscoroutine(outcome):
                    await outcome
            if progress is not None:
                progress(sessions)
            await acquire_lease(sessionmaker, CLEANUP_LEASE, holder)  # renew
            await asyncio.sleep(0)
    finally:
        await release_lease(sessionmaker, CLEANUP_LEASE, holder)
    if sessions:
        log.info("cleanup deleted %d expired sessions", sessions)
    return CleanupResult(sessions=sessions, conversations=conversations, messages=messages)


def _count(result: Any) -> int:
    return max(int(result.rowcount or 0), 0)


async def cleanup_and_forget(
    sessionmaker: async_sessionmaker[DbSession], provider: object, *, batch_size: int
) -> CleanupResult:
    """``cleanup_expired_sessions`` that also drops the provider's cached tokens of the
    deleted sessions (what the periodic task and the admin API run)."""
    return await cleanup_expired_sessions(
        sessionmaker,
        batch_size=batch_size,
        forget=lambda names: forget_upstream_credentials(provider, names),
    )


async def erase_session(
    sessionmaker: async_sessionmaker[DbSession],
    locks: SessionLocks,
    provider: object,
    session_id: str,
) -> q.SessionCounts | None:
    """Delete a session with everything under it and forget its cached upstream token.

    Waits for a turn in flight in this process (the session's turn lock) so its rows are
    not written after the delete. Returns what was deleted, or None if no such session.
    """
    async with locks.hold(session_id):
        async with sessionmaker() as db, db.begin():
            row = await q.get_session(db, session_id)
            if row is None:
                return None
            session_name = row.session_name
            counts = await q.count_session_data(db, session_id)
            await q.delete_session(db, session_id)
        await forget_upstream_credentials(provider, [session_name])
    return counts


async def forget_upstream_credentials(provider: object, session_names: Sequence[str]) -> None:
    """Drop cached upstream tokens (Coze OAuth) of these sessions, if the provider has any."""
    manager = getattr(provider, "token_manager", None)
    if manager is None:
        return
    for name in session_names:
        await manager.invalidate(name)


async def export_session(db: DbSession, session: SessionRow) -> dict[str, Any]:
    """Everything stored for ``session``: its metadata, conversations and messages."""
    rows, _ = await q.list_conversations(db, session.id)
    conversations = []
    for conversation, _n in rows:
        messages, _ = await q.list_messages(db, session.id, conversation.id)
        conversations.append(
            {
                "id": conversation.id,
                "title": conversation.title,
                "created_at": conversation.created_at.isoformat(),
                "updated_at": conversation.updated_at.isoformat(),
                "messages": [
                    {
                        "id": m.id,
                        "role": m.role,
                        "content": m.content,
                        "status": m.status,
                        "created_at": m.created_at.isoformat(),
                        "prompt_tokens": m.prompt_tokens,
                        "completion_tokens": m.completion_tokens,
                        "error_code": m.error_code,
                    }
                    for m in messages
                ],
            }
        )
    return {
        "session": {
            "session_id": session.id,
            "kind": session.kind,
            "user": session.external_user,
            "created_at": session.created_at.isoformat(),
            "last_active_at": session.last_active_at.isoformat(),
            "expires_at": session.expires_at.isoformat(),
        },
        "conversations": conversations,
    }


async def run_cleanup_periodically(
    sessionmaker: async_sessionmaker[DbSession],
    provider: object,
    *,
    interval: float,
    batch_size: int,
) -> None:
    """Background task: clean up every ``interval`` seconds until cancelled."""
    while True:
        await asyncio.sleep(interval)
        try:
            await cleanup_and_forget(sessionmaker, provider, batch_size=batch_size)
        except Exception:  # keep the task alive; the next round retries
            log.exception("session cleanup failed")


__all__ = [
    "CLEANUP_LEASE",
    "CleanupResult",
    "acquire_lease",
    "cleanup_and_forget",
    "cleanup_expired_sessions",
    "erase_session",
    "export_session",
    "forget_upstream_credentials",
    "release_lease",
    "run_cleanup_periodically",
]
