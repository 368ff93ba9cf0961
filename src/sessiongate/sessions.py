"""The session service: what the routes do to a session besides a turn — reset, delete
a conversation, erase, export — under the session's lock (any process), and the
lifecycle: expiry cleanup (one runner at a time across processes) and forgetting a
session's cached upstream credentials.

Expiry itself is enforced where a session is loaded (``api.deps.resolve_session``); a
turn pushes ``expires_at`` forward by the idle TTL (``store.turns.open_turn``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import async_sessionmaker

from .coordination import SessionCoordination
from .providers.base import Provider, SessionCredentials
from .store import ConversationRow, DbSession, MessageRow, SessionRow
from .store import queries as q
from .store.leases import acquire_lease, release_lease
from .store.models import new_id, utcnow

log = logging.getLogger(__name__)

CLEANUP_LEASE = "cleanup"


@dataclass(frozen=True, slots=True)
class CleanupResult:
    """What one cleanup deleted. ``skipped``: another cleanup held the lease."""

    sessions: int = 0
    conversations: int = 0
    messages: int = 0
    skipped: bool = False


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
    sessionmaker: async_sessionmaker[DbSession], provider: Provider, *, batch_size: int
) -> CleanupResult:
    """``cleanup_expired_sessions`` that also drops the provider's cached tokens of the
    deleted sessions (what the periodic task and the admin API run)."""
    return await cleanup_expired_sessions(
        sessionmaker,
        batch_size=batch_size,
        forget=lambda names: forget_upstream_credentials(provider, names),
    )


async def forget_upstream_credentials(provider: Provider, session_names: Sequence[str]) -> None:
    """Drop cached upstream tokens (Coze OAuth) of these sessions, if the provider keeps any."""
    if isinstance(provider, SessionCredentials):
        for name in session_names:
            await provider.forget_session(name)


class SessionService:
    """Operations on one session that must not overlap its turns, on any process.

    Each takes the session's lock (waiting at most ``wait`` seconds, then
    ``SessionBusy``, 409), so a turn never writes into a conversation being deleted.
    """

    def __init__(
        self,
        sessionmaker: async_sessionmaker[DbSession],
        coordination: SessionCoordination,
        provider: Provider,
        *,
        wait: float,
    ) -> None:
        self._sessionmaker = sessionmaker
        self._coordination = coordination
        self._provider = provider
        self._wait = wait

    async def reset(self, session_id: str) -> ConversationRow:
        """Delete every conversation of the session and start one empty one."""
        async with self._coordination.hold(session_id, wait=self._wait):
            async with self._sessionmaker() as db, db.begin():
                await q.delete_all_conversations(db, session_id)
                return await q.create_conversation(db, session_id)

    async def delete_conversation(self, session_id: str, conversation_id: str) -> None:
        """Delete one conversation and its messages; ``NotFound`` if not the session's."""
        async with self._coordination.hold(session_id, wait=self._wait):
            async with self._sessionmaker() as db, db.begin():
                await q.delete_conversation(db, session_id, conversation_id)

    async def erase(self, session_id: str) -> q.SessionCounts | None:
        """Delete the session with everything under it and forget its upstream token
        (fleet-wide when the token cache is shared). None if no such session."""
        async with self._coordination.hold(session_id, wait=self._wait):
            async with self._sessionmaker() as db, db.begin():
                row = await q.get_session(db, session_id)
                if row is None:
                    return None
                session_name = row.session_name
                counts = await q.count_session_data(db, session_id)
                await q.delete_session(db, session_id)
            await forget_upstream_credentials(self._provider, [session_name])
        return counts

    async def export(self, session: SessionRow) -> dict[str, Any]:
        """Everything stored for the session (see ``export_session``)."""
        async with self._sessionmaker() as db:
            return await export_session(db, session)

    async def cleanup(self, *, batch_size: int) -> CleanupResult:
        """Delete expired sessions now (see ``cleanup_and_forget``)."""
        return await cleanup_and_forget(self._sessionmaker, self._provider, batch_size=batch_size)


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
    provider: Provider,
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
    "SessionService",
    "acquire_lease",
    "cleanup_and_forget",
    "cleanup_expired_sessions",
    "export_session",
    "forget_upstream_credentials",
    "run_cleanup_periodically",
]
