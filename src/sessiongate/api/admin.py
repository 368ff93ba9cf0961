"""The admin API under ``/api/admin`` and the admin dashboard page at ``/admin``.

Every ``/api/admin`` route needs admin credentials (``AdminDep``: 401 without any, 403
for a non-admin) and writes one audit line to the ``sessiongate.admin`` logger naming
who did what to which target — never a credential.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import FileResponse
from pydantic import BaseModel, Field

from ..errors import NotFound
from ..sessions import cleanup_and_forget, erase_session
from ..store import admin as store_admin
from ..store.models import MessageRow, utcnow
from .deps import AdminDep, Caller, StateDep
from .web import WEB_DIR

audit_log = logging.getLogger("sessiongate.admin")

PREFIX = "/api/admin"

router = APIRouter(tags=["admin"])


def _audit(caller: Caller, action: str, target: str) -> None:
    # Security: the label names the caller (kind, tenant, IdP subject); tokens never appear.
    audit_log.info("admin action=%s target=%s by=%s", action, target, caller.label)


def _utc(value: datetime | None) -> datetime | None:
    """Query datetimes without an offset are taken as UTC."""
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# ------------------------------------------------------------------ response models


class AdminSession(BaseModel):
    """A session as operators see it."""

    id: str
    session_name: str = Field(description="The opaque name sent upstream (Coze session_name).")
    kind: str = Field(description="`anonymous`, `tenant` or `idp`.")
    tenant_id: str | None
    tenant_name: str | None
    issuer: str | None = Field(description="The identity provider, for `idp` sessions.")
    user: str | None = Field(description="The end user named by the tenant or the IdP subject.")
    state: str = Field(description="`active` or `expired`.")
    created_at: datetime
    last_active_at: datetime
    expires_at: datetime
    conversation_count: int
    message_count: int

    @classmethod
    def of(cls, summary: store_admin.SessionSummary, now: datetime) -> AdminSession:
        row = summary.session
        return cls(
            id=row.id,
            session_name=row.session_name,
            kind=row.kind,
            tenant_id=row.tenant_id,
            tenant_name=summary.tenant_name,
            issuer=row.issuer,
            user=row.external_user,
            state="active" if row.expires_at > now else "expired",
            created_at=row.created_at,
            last_active_at=row.last_active_at,
            expires_at=row.expires_at,
            conversation_count=summary.conversations,
            message_count=summary.messages,
        )


class AdminSessionPage(BaseModel):
    sessions: list[AdminSession]
    next_cursor: str | None = Field(
        description="Pass as `after` for the next page; null on the last page."
    )


class AdminMessage(BaseModel):
    id: str
    role: str
    content: str
    status: str
    created_at: datetime
    completion_tokens: int | None
    error_code: str | None

    @classmethod
    def of(cls, row: MessageRow) -> AdminMessage:
        return cls(
            id=row.id,
            role=row.role,
            content=row.content,
            status=row.status,
            created_at=row.created_at,
            completion_tokens=row.completion_tokens,
            error_code=row.error_code,
        )


class AdminConversation(BaseModel):
    id: str
    title: str | None = Field(
        description="Derived from the first user message; hidden with the content."
    )
    created_at: datetime
    updated_at: datetime
    message_count: int
    upstream_bound: bool = Field(description="Whether a provider conversation id is bound.")
    messages: list[AdminMessage] | None = Field(
        description="The messages, oldest first; null when chat content is hidden."
    )


class AdminSessionDetail(BaseModel):
    session: AdminSession
    content_visible: bool = Field(
        description="False unless SESSIONGATE_ADMIN_CAN_READ_CHATS=true; then titles and "
        "messages are withheld."
    )
    conversations: list[AdminConversation]


class SessionDeleted(BaseModel):
    session_id: str
    conversations: int = Field(description="Conversations deleted with the session.")
    messages: int = Field(description="Messages deleted with the session.")


class CleanupReport(BaseModel):
    sessions: int = Field(description="Expired sessions deleted.")
    conversations: int
    messages: int
    skipped: bool = Field(
        description="True if another cleanup was already running (nothing was deleted)."
    )


class MinuteTurns(BaseModel):
    minute: datetime = Field(description="Start of the minute, UTC.")
    turns: int


class AdminStats(BaseModel):
    sessions_total: int
    sessions_active: int
    tenants: int
    turns_last_hour: int
    turns_per_minute: list[MinuteTurns] = Field(
        description="60 one-minute buckets, oldest first; the last is the current minute."
    )
    reply_tokens: int = Field(description="Completion tokens of all stored replies.")
    reply_tokens_last_hour: int
    errors_by_code: dict[str, int] = Field(
        description="Stored replies that failed upstream, by error code."
    )


# ------------------------------------------------------------------ routes


@router.get(f"{PREFIX}/sessions", response_model=AdminSessionPage)
async def list_sessions(
    caller: AdminDep,
    state: StateDep,
    limit: Annotated[int, Query(ge=1, le=200, description="Page size.")] = 50,
    after: Annotated[str | None, Query(description="`next_cursor` of the previous page.")] = None,
    tenant_id: Annotated[str | None, Query(description="Only this tenant's sessions.")] = None,
    session_state: Annotated[
        store_admin.SessionState | None,
        Query(alias="state", description="`active` (not yet expired) or `expired`."),
    ] = None,
    active_before: Annotated[
        datetime | None,
        Query(description="Last active before this time (ISO 8601; UTC if no offset)."),
    ] = None,
    active_after: Annotated[
        datetime | None, Query(description="Last active at or after this time.")
    ] = None,
    search: Annotated[
        str | None,
        Query(max_length=255, description="A session id prefix, or part of the end user's name."),
    ] = None,
) -> AdminSessionPage:
    """List sessions, most recently active first, one page at a time.

    Paging is by cursor: pass the `next_cursor` of a page as `after` to get the next one.
    Pages stay stable while new sessions are created (they sort before the first page).
    """
    _audit(caller, "list_sessions", "sessions")
    now = utcnow()
    async with state.sessionmaker() as db:
        page = await store_admin.list_sessions(
            db,
            limit=limit,
            after=after,
            tenant_id=tenant_id,
            state=session_state,
            active_before=_utc(active_before),
            active_after=_utc(active_after),
            search=search,
            now=now,
        )
    return AdminSessionPage(
        sessions=[AdminSession.of(item, now) for item in page.items],
        next_cursor=page.next_cursor,
    )


@router.get(f"{PREFIX}/sessions/{{session_id}}", response_model=AdminSessionDetail)
async def get_session(session_id: str, caller: AdminDep, state: StateDep) -> AdminSessionDetail:
    """One session: its metadata, tenant, end user, counts and conversations.

    Message content (and conversation titles, which quote it) is included only when the
    gateway runs with `SESSIONGATE_ADMIN_CAN_READ_CHATS=true`; `content_visible` says which.
    """
    _audit(caller, "get_session", session_id)
    visible = state.settings.admin_can_read_chats
    async with state.sessionmaker() as db:
        detail = await store_admin.session_detail(db, session_id, include_messages=visible)
    if detail is None:
        raise NotFound("No such session.", code="session_not_found")
    return AdminSessionDetail(
        session=AdminSession.of(detail.summary, utcnow()),
        content_visible=visible,
        conversations=[
            AdminConversation(
                id=c.conversation.id,
                title=c.conversation.title if visible else None,
                created_at=c.conversation.created_at,
                updated_at=c.conversation.updated_at,
                message_count=c.message_count,
                upstream_bound=c.conversation.upstream_conversation_id is not None,
                messages=[AdminMessage.of(m) for m in c.messages]
                if c.messages is not None
                else None,
            )
            for c in detail.conversations
        ],
    )


@router.delete(f"{PREFIX}/sessions/{{session_id}}", response_model=SessionDeleted)
async def delete_session(session_id: str, caller: AdminDep, state: StateDep) -> SessionDeleted:
    """Delete a session with all its conversations and messages, and forget its cached
    upstream credentials. The end user's next request starts a new session."""
    _audit(caller, "delete_session", session_id)
    counts = await erase_session(state.sessionmaker, state.locks, state.provider, session_id)
    if counts is None:
        raise NotFound("No such session.", code="session_not_found")
    return SessionDeleted(
        session_id=session_id, conversations=counts.conversations, messages=counts.messages
    )


@router.post(f"{PREFIX}/cleanup", response_model=CleanupReport)
async def run_cleanup(caller: AdminDep, state: StateDep) -> CleanupReport:
    """Delete every expired session now, with its data and cached upstream credentials.

    Returns what was deleted. If a cleanup is already running (here or in another
    gateway process sharing the database), returns at once with `skipped: true`.
    """
    _audit(caller, "cleanup", "expired_sessions")
    result = await cleanup_and_forget(
        state.sessionmaker, state.provider, batch_size=state.settings.cleanup_batch_size
    )
    audit_log.info(
        "admin cleanup deleted sessions=%d conversations=%d messages=%d skipped=%s",
        result.sessions,
        result.conversations,
        result.messages,
        result.skipped,
    )
    return CleanupReport(
        sessions=result.sessions,
        conversations=result.conversations,
        messages=result.messages,
        skipped=result.skipped,
    )


@router.get(f"{PREFIX}/stats", response_model=AdminStats)
async def get_stats(caller: AdminDep, state: StateDep) -> AdminStats:
    """Gateway figures: sessions active and total, tenants, turns per minute over the
    last hour, reply tokens and provider errors by code (over stored messages)."""
    _audit(caller, "stats", "gateway")
    async with state.sessionmaker() as db:
        figures = await store_admin.stats(db, now=utcnow())
    series = [MinuteTurns(minute=m, turns=n) for m, n in figures.turns_per_minute]
    return AdminStats(
        sessions_total=figures.sessions_total,
        sessions_active=figures.sessions_active,
        tenants=figures.tenants,
        turns_last_hour=sum(point.turns for point in series),
        turns_per_minute=series,
        reply_tokens=figures.reply_tokens,
        reply_tokens_last_hour=figures.reply_tokens_last_hour,
        errors_by_code=figures.errors_by_code,
    )


@router.get("/admin", include_in_schema=False)
async def admin_page() -> FileResponse:
    # The page itself is public; every API call it makes carries the admin token.
    return FileResponse(WEB_DIR / "admin.html", media_type="text/html; charset=utf-8")


__all__ = ["router"]
