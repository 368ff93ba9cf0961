"""The operator's view of the store: queries across sessions, for admins only.

Unlike ``store.queries`` (every query keyed by one session, the isolation boundary of
chat), these read many sessions at once. They are reachable only through the admin API
(``api.admin``, guarded by ``AdminDep``) and the CLI; nothing in a turn calls them.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from sqlalchemy import ColumnElement, func, literal, or_, select, tuple_

from ..errors import BadRequest
from .database import DbSession
from .models import ConversationRow, MessageRow, SessionRow, TenantRow, UTCDateTime
from .queries import count_sessions

SessionState = Literal["active", "expired"]

STATS_WINDOW_MINUTES = 60


# ------------------------------------------------------------------ cursors


def encode_cursor(last_active_at: datetime, session_id: str) -> str:
    """An opaque keyset cursor: URL-safe base64 of ``[last_active_at ISO, id]``."""
    raw = json.dumps([last_active_at.astimezone(UTC).isoformat(), session_id])
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    """The (last_active_at, id) a cursor points after. Raises ``BadRequest`` if malformed."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        stamp, session_id = json.loads(base64.urlsafe_b64decode(padded.encode()))
        when = datetime.fromisoformat(stamp)
        if not isinstance(session_id, str) or when.tzinfo is None:
            raise ValueError("bad cursor fields")
    except (ValueError, TypeError, binascii.Error, UnicodeDecodeError) as exc:
        raise BadRequest("The page cursor is not valid.", code="invalid_cursor") from exc
    return when, session_id


# ------------------------------------------------------------------ listing


@dataclass(frozen=True, slots=True)
class SessionSummary:
    """One session as the operator sees it in a list: the row, its tenant's name and counts."""

    session: SessionRow
    tenant_name: str | None
    conversations: int
    messages: int


@dataclass(frozen=True, slots=True)
class SessionPage:
    """A page of sessions, most recently active first; ``next_cursor`` None on the last page."""

    items: list[SessionSummary]
    next_cursor: str | None


async def list_sessions(
    db: DbSession,
    *,
    limit: int,
    after: str | None = None,
    tenant_id: str | None = None,
    tenant: str | None = None,
    state: SessionState | None = None,
    active_before: datetime | None = None,
    active_after: datetime | None = None,
    search: str | None = None,
    now: datetime,
) -> SessionPage:
    """A page of at most ``limit`` sessions ordered by ``last_active_at DESC, id DESC``.

    Keyset pagination: ``after`` is the previous page's ``next_cursor``; the page holds
    only sessions strictly after it in that order, so sessions created meanwhile (which
        sort first) never shift later pages. Filters: ``tenant_id``; ``tenant`` (a tenant's
    name or id; an unknown one matches nothing); ``state`` (``active``:
    ``expires_at > now``, ``expired``: the rest); ``active_before`` (exclusive) and
    ``active_after`` (inclusive) bound ``last_active_at``; ``search`` matches a session id
    or ``session_name`` prefix or a substring of the end user's name (case-insensitive).
    Raises ``BadRequest`` for a malformed cursor.
    """
    where: list[ColumnElement[bool]] = []
    if after is not None:
        stamp, last_id = decode_cursor(after)
        # A row-value comparison is one range scan of ix_sessions_last_active on both
        # databases; the equivalent OR form is not (deep pages were 5x slower on PG).
        where.append(
            tuple_(SessionRow.last_active_at, SessionRow.id)
            < tuple_(literal(stamp, UTCDateTime()), literal(last_id))
        )
    if tenant_id is not None:
        where.append(SessionRow.tenant_id == tenant_id)
    if tenant is not None:
        named = select(TenantRow.id).where(TenantRow.name == tenant).scalar_subquery()
        where.append(or_(SessionRow.tenant_id == tenant, SessionRow.tenant_id == named))
    if state == "active":
        where.append(SessionRow.expires_at > now)
    elif state == "expired":
        where.append(SessionRow.expires_at <= now)
    if active_before is not None:
        where.append(SessionRow.last_active_at < active_before)
    if active_after is not None:
        where.append(SessionRow.last_active_at >= active_after)
    if search is not None and search.strip():
        term = search.strip()
        # autoescape: % and _ in the search are literal characters, not wildcards.
        where.append(
            or_(
                SessionRow.id.startswith(term.lower(), autoescape=True),
                SessionRow.session_name.startswith(term, autoescape=True),
                SessionRow.external_user.icontains(term, autoescape=True),
            )
        )
    rows = (
        await db.execute(
            select(SessionRow, TenantRow.name)
            .outerjoin(TenantRow, TenantRow.id == SessionRow.tenant_id)
            .where(*where)
            .order_by(SessionRow.last_active_at.desc(), SessionRow.id.desc())
            .limit(limit + 1)
        )
    ).all()
    page = rows[:limit]
    ids = [row.id for row, _ in page]
    conversations = await _counts_by_session(db, ConversationRow.session_id, ids)
    messages = await _counts_by_session(db, MessageRow.session_id, ids)
    items = [
        SessionSummary(row, name, conversations.get(row.id, 0), messages.get(row.id, 0))
        for row, name in page
    ]
    next_cursor = None
    if len(rows) > limit and page:
        last = page[-1][0]
        next_cursor = encode_cursor(last.last_active_at, last.id)
    return SessionPage(items=items, next_cursor=next_cursor)


async def _counts_by_session(
    db: DbSession, column: Any, session_ids: Sequence[str]
) -> dict[str, int]:
    if not session_ids:
        return {}
    result = await db.execute(
        select(column, func.count()).where(column.in_(session_ids)).group_by(column)
    )
    return {session_id: int(n) for session_id, n in result.all()}


# ------------------------------------------------------------------ one session


@dataclass(frozen=True, slots=True)
class ConversationDetail:
    """A conversation of the session; ``messages`` is None when content is not read."""

    conversation: ConversationRow
    message_count: int
    messages: list[MessageRow] | None


@dataclass(frozen=True, slots=True)
class SessionDetail:
    """A session with its tenant's name, counts and conversations (newest activity first)."""

    summary: SessionSummary
    conversations: list[ConversationDetail]


async def session_detail(
    db: DbSession, session_id: str, *, include_messages: bool
) -> SessionDetail | None:
    """Everything about one session, or None if it does not exist.

    Message rows (with their content) are loaded only when ``include_messages`` is true:
    reading end users' chats is a separate permission (``SESSIONGATE_ADMIN_CAN_READ_CHATS``).
    """
    found = (
        await db.execute(
            select(SessionRow, TenantRow.name)
            .outerjoin(TenantRow, TenantRow.id == SessionRow.tenant_id)
            .where(SessionRow.id == session_id)
        )
    ).first()
    if found is None:
        return None
    row, tenant_name = found
    counts = await _counts_by_conversation(db, session_id)
    conversations = (
        await db.scalars(
            select(ConversationRow)
            .where(ConversationRow.session_id == session_id)
            .order_by(ConversationRow.updated_at.desc(), ConversationRow.id)
        )
    ).all()
    by_conversation: dict[str, list[MessageRow]] = {}
    if include_messages:
        messages = await db.scalars(
            select(MessageRow)
            .where(MessageRow.session_id == session_id)
            .order_by(MessageRow.conversation_id, MessageRow.position)
        )
        for message in messages:
            by_conversation.setdefault(message.conversation_id, []).append(message)
    details = [
        ConversationDetail(
            conversation=c,
            message_count=counts.get(c.id, 0),
            messages=by_conversation.get(c.id, []) if include_messages else None,
        )
        for c in conversations
    ]
    summary = SessionSummary(row, tenant_name, len(conversations), sum(counts.values()))
    return SessionDetail(summary=summary, conversations=details)


async def _counts_by_conversation(db: DbSession, session_id: str) -> dict[str, int]:
    result = await db.execute(
        select(MessageRow.conversation_id, func.count())
        .where(MessageRow.session_id == session_id)
        .group_by(MessageRow.conversation_id)
    )
    return {conversation_id: int(n) for conversation_id, n in result.all()}


# ------------------------------------------------------------------ tenants


@dataclass(frozen=True, slots=True)
class TenantSummary:
    """A tenant as the operator sees it: the row and how many sessions it has."""

    tenant: TenantRow
    sessions: int


async def list_tenants(db: DbSession) -> list[TenantSummary]:
    """Every tenant with its session count: active ones first, then revoked ones,
    each group oldest first."""
    counts = dict(
        (
            await db.execute(
                select(SessionRow.tenant_id, func.count())
                .where(SessionRow.tenant_id.is_not(None))
                .group_by(SessionRow.tenant_id)
            )
        ).all()
    )
    rows = (
        await db.scalars(
            select(TenantRow).order_by(
                TenantRow.revoked_at.is_not(None), TenantRow.created_at, TenantRow.name
            )
        )
    ).all()
    return [TenantSummary(row, int(counts.get(row.id, 0))) for row in rows]


async def tenant_summary(db: DbSession, tenant: TenantRow) -> TenantSummary:
    """``tenant`` with its session count."""
    count = await db.scalar(
        select(func.count()).select_from(SessionRow).where(SessionRow.tenant_id == tenant.id)
    )
    return TenantSummary(tenant, int(count or 0))


# ------------------------------------------------------------------ stats


@dataclass(frozen=True, slots=True)
class Stats:
    """Gateway-wide figures at ``now``.

    ``turns_per_minute``: ``STATS_WINDOW_MINUTES`` (minute start UTC, assistant replies)
    pairs, oldest first, the last one the current minute. ``reply_tokens``: sum of the
    stored replies' completion tokens (all stored messages; the last hour separately).
    ``errors_by_code``: stored replies that ended with a provider error, by error code.
    ``tenants`` counts active tenants only; revoked ones are ``tenants_revoked``.
    Figures cover what is stored: cleanup removes expired sessions' messages.
    """

    sessions_total: int
    sessions_active: int
    tenants: int
    tenants_revoked: int
    turns_per_minute: list[tuple[datetime, int]]
    reply_tokens: int
    reply_tokens_last_hour: int
    errors_by_code: dict[str, int]


def _minute_bucket(db: DbSession) -> ColumnElement[Any]:
    """SQL for ``MessageRow.created_at`` truncated to the minute, per dialect."""
    if db.get_bind().dialect.name == "postgresql":
        return func.date_trunc("minute", MessageRow.created_at)
    # SQLite stores UTCDateTime as naive UTC text: 'YYYY-MM-DD HH:MM:SS.ffffff'.
    return func.strftime("%Y-%m-%dT%H:%M", MessageRow.created_at)


def _bucket_key(value: Any) -> datetime:
    if isinstance(value, datetime):
        when = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    else:
        when = datetime.fromisoformat(str(value)).replace(tzinfo=UTC)
    return when.astimezone(UTC).replace(second=0, microsecond=0)


async def stats(db: DbSession, *, now: datetime) -> Stats:
    """Gateway-wide figures for the dashboard (see ``Stats``); bucketing is done in SQL."""
    total, active = await count_sessions(db, now=now)
    tenants = (
        await db.scalar(
            select(func.count()).select_from(TenantRow).where(TenantRow.revoked_at.is_(None))
        )
        or 0
    )
    revoked = (
        await db.scalar(
            select(func.count()).select_from(TenantRow).where(TenantRow.revoked_at.is_not(None))
        )
        or 0
    )

    current = now.astimezone(UTC).replace(second=0, microsecond=0)
    start = current - timedelta(minutes=STATS_WINDOW_MINUTES - 1)
    end = current + timedelta(minutes=1)
    in_window = (
        MessageRow.role == "assistant",
        MessageRow.created_at >= start,
        MessageRow.created_at < end,
    )
    bucket = _minute_bucket(db).label("minute")
    counted = await db.execute(select(bucket, func.count()).where(*in_window).group_by(bucket))
    per_minute: dict[datetime, int] = {}
    for minute, n in counted.all():
        key = _bucket_key(minute)
        per_minute[key] = per_minute.get(key, 0) + int(n)
    series = [
        (start + timedelta(minutes=i), per_minute.get(start + timedelta(minutes=i), 0))
        for i in range(STATS_WINDOW_MINUTES)
    ]

    tokens = func.coalesce(func.sum(MessageRow.completion_tokens), 0)
    reply_tokens = await db.scalar(select(tokens).where(MessageRow.role == "assistant")) or 0
    recent_tokens = await db.scalar(select(tokens).where(*in_window)) or 0

    errors = await db.execute(
        select(MessageRow.error_code, func.count())
        .where(MessageRow.role == "assistant", MessageRow.status == "error")
        .group_by(MessageRow.error_code)
    )
    errors_by_code = {str(code or "unknown"): int(n) for code, n in errors.all()}
    return Stats(
        sessions_total=total,
        sessions_active=active,
        tenants=int(tenants),
        tenants_revoked=int(revoked),
        turns_per_minute=series,
        reply_tokens=int(reply_tokens),
        reply_tokens_last_hour=int(recent_tokens),
        errors_by_code=errors_by_code,
    )


__all__ = [
    "STATS_WINDOW_MINUTES",
    "ConversationDetail",
    "SessionDetail",
    "SessionPage",
    "SessionState",
    "SessionSummary",
    "Stats",
    "TenantSummary",
    "decode_cursor",
    "encode_cursor",
    "list_sessions",
    "list_tenants",
    "session_detail",
    "stats",
    "tenant_summary",
]
