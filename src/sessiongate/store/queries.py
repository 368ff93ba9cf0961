"""Queries over user data. Every one that reads or changes a conversation or message is
keyed by ``session_id``: a row of another session is indistinguishable from a missing
one (the caller gets ``None`` / ``NotFound``). This is the isolation boundary; tests in
``tests/store`` and ``tests/test_isolation.py`` prove it on SQLite and PostgreSQL.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import bindparam, delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from ..errors import NotFound
from .database import DbConnection, DbSession
from .models import ConversationRow, MessageRow, SessionRow, new_id, utcnow


def new_session_name() -> str:
    """An opaque upstream identity: random, no internal id or personal data (``sg_`` + 32 chars)."""
    return "sg_" + secrets.token_urlsafe(24)


async def create_session(
    db: DbSession, *, idle_ttl: int, now: datetime | None = None
) -> SessionRow:
    """Insert a new session that expires ``idle_ttl`` seconds from ``now``."""
    now = now or utcnow()
    row = SessionRow(
        id=new_id(),
        session_name=new_session_name(),
        created_at=now,
        last_active_at=now,
        expires_at=now + timedelta(seconds=idle_ttl),
    )
    db.add(row)
    await db.flush()
    return row


async def session_for_principal(
    db: DbSession,
    *,
    kind: str,
    principal: str,
    idle_ttl: int,
    tenant_id: str | None = None,
    issuer: str | None = None,
    external_user: str | None = None,
    now: datetime | None = None,
) -> SessionRow:
    """The live session of a named identity, created on first use.

    ``principal`` is the identity's unique key, e.g. ``tenant:<tenant id>:<user>`` or
    ``idp:<issuer>:<subject>``. An expired session of the same identity is deleted
    (with everything under it, as cleanup would) and a fresh one is created: the caller
    proved who it is again, and expired history must not come back.
    Must run in a transaction; concurrent first uses are resolved by the unique
    ``principal`` constraint (the loser retries via ``IntegrityError`` in the caller).
    """
    now = now or utcnow()
    row = await db.scalar(select(SessionRow).where(SessionRow.principal == principal))
    if row is not None and row.expires_at > now:
        return row
    if row is not None:
        await delete_session(db, row.id)
    created = SessionRow(
        id=new_id(),
        session_name=new_session_name(),
        kind=kind,
        tenant_id=tenant_id,
        issuer=issuer,
        external_user=external_user,
        principal=principal,
        created_at=now,
        last_active_at=now,
        expires_at=now + timedelta(seconds=idle_ttl),
    )
    db.add(created)
    await db.flush()
    return created


async def delete_session(db: DbSession, session_id: str) -> None:
    """Delete a session and everything under it (messages, conversations)."""
    await db.execute(delete(MessageRow).where(MessageRow.session_id == session_id))
    await db.execute(delete(ConversationRow).where(ConversationRow.session_id == session_id))
    await db.execute(delete(SessionRow).where(SessionRow.id == session_id))


async def get_session(db: DbSession, session_id: str) -> SessionRow | None:
    """The session with this id, expired or not; None if it does not exist."""
    return await db.get(SessionRow, session_id)


_SESSIONS = SessionRow.__table__
_SESSION_BY_ID = select(_SESSIONS).where(_SESSIONS.c.id == bindparam("p_id"))


async def find_session(engine: AsyncEngine, session_id: str) -> SessionRow | None:
    """``get_session`` for the lookup every request with a session token makes: one
    prebuilt Core statement on a connection of ``engine`` (``read_engine``), no ORM
    session, identity map or unit of work (1.2 → 0.8 ms on SQLite, 0.6 → 0.4 ms on
    PostgreSQL, ``bench/README.md``). The row comes back as a transient ``SessionRow``
    (it has no relationships to load); None if there is no such session."""
    async with engine.connect() as conn:
        row = (await conn.execute(_SESSION_BY_ID, {"p_id": session_id})).first()
    return None if row is None else SessionRow(**row._mapping)


async def touch_session(
    db: DbSession | DbConnection, session_id: str, *, idle_ttl: int, now: datetime | None = None
) -> None:
    """Mark the session active now and push its expiry ``idle_ttl`` seconds out."""
    now = now or utcnow()
    await db.execute(
        update(SessionRow)
        .where(SessionRow.id == session_id)
        .values(last_active_at=now, expires_at=now + timedelta(seconds=idle_ttl))
    )


@dataclass(frozen=True, slots=True)
class SessionCounts:
    conversations: int
    messages: int


async def count_session_data(db: DbSession, session_id: str) -> SessionCounts:
    """How many conversations and messages the session holds."""
    conversations = await db.scalar(
        select(func.count())
        .select_from(ConversationRow)
        .where(ConversationRow.session_id == session_id)
    )
    messages = await db.scalar(
        select(func.count()).select_from(MessageRow).where(MessageRow.session_id == session_id)
    )
    return SessionCounts(conversations=conversations or 0, messages=messages or 0)


async def count_sessions(db: DbSession, *, now: datetime | None = None) -> tuple[int, int]:
    """(all sessions, sessions not yet expired) — for health and admin, never per-user data."""
    now = now or utcnow()
    total = await db.scalar(select(func.count()).select_from(SessionRow))
    active = await db.scalar(
        select(func.count()).select_from(SessionRow).where(SessionRow.expires_at > now)
    )
    return total or 0, active or 0


async def create_conversation(
    db: DbSession, session_id: str, *, title: str | None = None, now: datetime | None = None
) -> ConversationRow:
    """Insert an empty conversation in the session."""
    now = now or utcnow()
    row = ConversationRow(
        id=new_id(), session_id=session_id, title=title, created_at=now, updated_at=now
    )
    db.add(row)
    await db.flush()
    return row


async def get_conversation(db: DbSession, session_id: str, conversation_id: str) -> ConversationRow:
    """The session's conversation with this id. Raises ``NotFound`` for any other id."""
    row = await db.scalar(
        select(ConversationRow).where(
            ConversationRow.id == conversation_id, ConversationRow.session_id == session_id
        )
    )
    if row is None:
        raise NotFound("No such conversation.", code="conversation_not_found")
    return row


async def list_conversations(
    db: DbSession, session_id: str, *, limit: int | None = None, offset: int = 0
) -> tuple[Sequence[tuple[ConversationRow, int]], int]:
    """A page of the session's conversations (all with ``limit=None``), newest activity
    first, each with its message count; plus the total number of conversations."""
    counts = (
        select(MessageRow.conversation_id, func.count().label("n"))
        .where(MessageRow.session_id == session_id)
        .group_by(MessageRow.conversation_id)
        .subquery()
    )
    rows = await db.execute(
        select(ConversationRow, func.coalesce(counts.c.n, 0))
        .outerjoin(counts, counts.c.conversation_id == ConversationRow.id)
        .where(ConversationRow.session_id == session_id)
        .order_by(ConversationRow.updated_at.desc(), ConversationRow.id)
        .limit(limit)
        .offset(offset)
    )
    total = await db.scalar(
        select(func.count())
        .select_from(ConversationRow)
        .where(ConversationRow.session_id == session_id)
    )
    return [(c, int(n)) for c, n in rows.all()], total or 0


async def rename_conversation(
    db: DbSession, session_id: str, conversation_id: str, title: str
) -> ConversationRow:
    """Set the conversation's title. Raises ``NotFound`` unless it is the session's."""
    row = await get_conversation(db, session_id, conversation_id)
    row.title = title
    await db.flush()
    return row


async def delete_conversation(db: DbSession, session_id: str, conversation_id: str) -> None:
    """Delete the session's conversation and its messages. Raises ``NotFound`` otherwise."""
    await get_conversation(db, session_id, conversation_id)
    await db.execute(
        delete(MessageRow).where(
            MessageRow.session_id == session_id, MessageRow.conversation_id == conversation_id
        )
    )
    await db.execute(
        delete(ConversationRow).where(
            ConversationRow.session_id == session_id, ConversationRow.id == conversation_id
        )
    )


async def delete_all_conversations(db: DbSession, session_id: str) -> None:
    """Delete every conversation and message of the session; the session itself stays."""
    await db.execute(delete(MessageRow).where(MessageRow.session_id == session_id))
    await db.execute(delete(ConversationRow).where(ConversationRow.session_id == session_id))


async def list_messages(
    db: DbSession,
    session_id: str,
    conversation_id: str,
    *,
    limit: int | None = None,
    offset: int = 0,
) -> tuple[Sequence[MessageRow], int]:
    """A page of one conversation's messages, oldest first, and their total.

    Raises ``NotFound`` unless the conversation belongs to the session.
    """
    await get_conversation(db, session_id, conversation_id)
    where = (MessageRow.session_id == session_id, MessageRow.conversation_id == conversation_id)
    query = select(MessageRow).where(*where).order_by(MessageRow.position).offset(offset)
    if limit is not None:
        query = query.limit(limit)
    rows = (await db.scalars(query)).all()
    total = await db.scalar(select(func.count()).select_from(MessageRow).where(*where))
    return rows, total or 0


async def append_message(
    db: DbSession,
    conversation: ConversationRow,
    *,
    role: str,
    content: str,
    status: str = "complete",
    prompt_tokens: int | None = None,
    completion_tokens: int | None = None,
    error_code: str | None = None,
    upstream_logid: str | None = None,
    now: datetime | None = None,
) -> MessageRow:
    """Append a message at the end of ``conversation`` and bump its ``updated_at``.

    The position comes from the conversation's counter in one UPDATE, so concurrent
    writers on any process get distinct positions. Raises ``NotFound`` if the
    conversation is gone.
    """
    now = now or utcnow()
    position = await _allocate_positions(db, conversation.session_id, conversation.id, 1, now)
    row = MessageRow(
        id=new_id(),
        session_id=conversation.session_id,
        conversation_id=conversation.id,
        position=position,
        role=role,
        content=content,
        status=status,
        created_at=now,
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        error_code=error_code,
        upstream_logid=upstream_logid,
    )
    db.add(row)
    if conversation.title is None and role == "user":
        conversation.title = title_from(content)
        await db.execute(
            update(ConversationRow)
            .where(
                ConversationRow.id == conversation.id,
                ConversationRow.session_id == conversation.session_id,
                ConversationRow.title.is_(None),
            )
            .values(title=conversation.title)
        )
    conversation.updated_at = now
    await db.flush()
    return row


async def _allocate_positions(
    db: DbSession, session_id: str, conversation_id: str, count: int, now: datetime
) -> int:
    """Take the next ``count`` positions of the conversation; returns the first. One
    UPDATE ... RETURNING, atomic on SQLite and PostgreSQL. Raises ``NotFound``."""
    last = await db.scalar(
        update(ConversationRow)
        .where(ConversationRow.id == conversation_id, ConversationRow.session_id == session_id)
        .values(next_position=ConversationRow.next_position + count, updated_at=now)
        .returning(ConversationRow.next_position)
    )
    if last is None:
        raise NotFound("No such conversation.", code="conversation_not_found")
    return int(last) - count + 1


def title_from(content: str) -> str:
    """A conversation's title from its first message: one line, at most 60 characters."""
    line = " ".join(content.split())
    return line if len(line) <= 60 else line[:59] + "…"


__all__ = [
    "SessionCounts",
    "title_from",
    "append_message",
    "count_session_data",
    "count_sessions",
    "create_conversation",
    "create_session",
    "delete_all_conversations",
    "delete_conversation",
    "delete_session",
    "get_conversation",
    "find_session",
    "get_session",
    "list_conversations",
    "list_messages",
    "new_session_name",
    "rename_conversation",
    "session_for_principal",
    "touch_session",
]
