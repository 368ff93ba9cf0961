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
from ..store import admin as store_admin
from ..store import feedback as store_feedback
from ..store import tenants as store_tenants
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
    feedback: str | None = None

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
            feedback=row.feedback,
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
    tenants: int = Field(description="Active tenants (revoked ones are not counted here).")
    tenants_revoked: int = Field(description="Revoked tenants.")
    turns_last_hour: int
    turns_per_minute: list[MinuteTurns] = Field(
        description="60 one-minute buckets, oldest first; the last is the current minute."
    )
    reply_tokens: int = Field(description="Completion tokens of all stored replies.")
    reply_tokens_last_hour: int
    errors_by_code: dict[str, int] = Field(
        description="Stored replies that failed upstream, by error code."
    )
    feedback: dict[str, int] = Field(
        default_factory=dict, description='Replies rated by end users: {"up": n, "down": m}.'
    )


class RatedReply(BaseModel):
    """A reply an end user rated, with the question it answered (content if visible)."""

    session_id: str
    conversation_id: str
    message_id: str
    rating: str
    rated_at: datetime
    status: str
    question: str | None = Field(description="Null unless chat content is visible to admins.")
    reply: str | None = Field(description="Null unless chat content is visible to admins.")


class RatedReplyPage(BaseModel):
    items: list[RatedReply]
    next_before: datetime | None = Field(
        description="Pass as `before` for the next page; null on the last page."
    )


class AdminTenant(BaseModel):
    """A tenant as operators see it; its API key is never shown here."""

    id: str
    name: str
    key_prefix: str = Field(description="The first characters of the current key (`sgk_...`).")
    created_at: datetime
    revoked_at: datetime | None = Field(description="Set when the tenant was revoked.")
    state: str = Field(description="`active` or `revoked`.")
    allow_system_prompt: bool = Field(
        description="Whether its /v1 clients may send their own system prompt."
    )
    sessions: int = Field(description="Sessions of this tenant's end users.")

    @classmethod
    def of(cls, summary: store_admin.TenantSummary) -> AdminTenant:
        row = summary.tenant
        return cls(
            id=row.id,
            name=row.name,
            key_prefix=row.api_key_prefix,
            created_at=row.created_at,
            revoked_at=row.revoked_at,
            state="revoked" if row.revoked_at is not None else "active",
            allow_system_prompt=row.allow_system_prompt,
            sessions=summary.sessions,
        )


class AdminTenantList(BaseModel):
    tenants: list[AdminTenant] = Field(
        description="Active tenants first, then revoked ones; each group oldest first."
    )


class TenantCreate(BaseModel):
    name: str = Field(min_length=1, max_length=100, pattern=r"\S")
    allow_system_prompt: bool = False


class TenantUpdate(BaseModel):
    allow_system_prompt: bool | None = None


class TenantRotate(BaseModel):
    grace_seconds: int = Field(
        0,
        ge=0,
        le=store_tenants.MAX_GRACE_SECONDS,
        description="How long the previous key keeps working; 0 stops it at once.",
    )


class TenantWithKey(BaseModel):
    tenant: AdminTenant
    api_key: str = Field(description="The new API key, shown this once; only a hash is kept.")


class TenantRotated(TenantWithKey):
    previous_key_expires_at: datetime | None = Field(
        description="When the replaced key stops working; null if it already has."
    )


class TenantChanged(BaseModel):
    tenant: AdminTenant


# ------------------------------------------------------------------ routes


@router.get(f"{PREFIX}/sessions", response_model=AdminSessionPage)
async def list_sessions(
    caller: AdminDep,
    state: StateDep,
    limit: Annotated[int, Query(ge=1, le=200, description="Page size.")] = 50,
    after: Annotated[str | None, Query(description="`next_cursor` of the previous page.")] = None,
    tenant: Annotated[
        str | None, Query(max_length=100, description="Only this tenant's sessions (name or id).")
    ] = None,
    tenant_id: Annotated[
        str | None, Query(description="Only this tenant's sessions (id; `tenant` is easier).")
    ] = None,
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
            tenant=tenant,
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
    counts = await state.sessions.erase(session_id)
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
    result = await state.sessions.cleanup(batch_size=state.settings.cleanup_batch_size)
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
        feedback = await store_feedback.count_feedback(db)
    series = [MinuteTurns(minute=m, turns=n) for m, n in figures.turns_per_minute]
    return AdminStats(
        sessions_total=figures.sessions_total,
        sessions_active=figures.sessions_active,
        tenants=figures.tenants,
        tenants_revoked=figures.tenants_revoked,
        turns_last_hour=sum(point.turns for point in series),
        turns_per_minute=series,
        reply_tokens=figures.reply_tokens,
        reply_tokens_last_hour=figures.reply_tokens_last_hour,
        errors_by_code=figures.errors_by_code,
        feedback=feedback,
    )


@router.get(f"{PREFIX}/feedback", response_model=RatedReplyPage)
async def list_feedback(
    caller: AdminDep,
    state: StateDep,
    rating: Annotated[
        store_feedback.Rating | None, Query(description="Only `up` or only `down`.")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    before: Annotated[datetime | None, Query(description="`next_before` of the last page.")] = None,
) -> RatedReplyPage:
    """Replies end users rated, most recently rated first, to find bad answers.

    The question and reply text are included only with
    `SESSIONGATE_ADMIN_CAN_READ_CHATS=true`; the session id opens the session's detail.
    """
    _audit(caller, "list_feedback", rating or "all")
    visible = state.settings.admin_can_read_chats
    async with state.sessionmaker() as db:
        rated = await store_feedback.list_feedback(
            db, rating=rating, limit=limit, before=_utc(before)
        )
    items = [
        RatedReply(
            session_id=r.message.session_id,
            conversation_id=r.message.conversation_id,
            message_id=r.message.id,
            rating=r.message.feedback or "",
            rated_at=r.message.feedback_at or r.message.created_at,
            status=r.message.status,
            question=(r.question.content if r.question else None) if visible else None,
            reply=r.message.content if visible else None,
        )
        for r in rated
    ]
    return RatedReplyPage(
        items=items, next_before=items[-1].rated_at if len(items) == limit else None
    )


@router.get(f"{PREFIX}/tenants", response_model=AdminTenantList)
async def list_tenants(caller: AdminDep, state: StateDep) -> AdminTenantList:
    """Every tenant with its key prefix, state and session count; revoked ones last."""
    _audit(caller, "list_tenants", "tenants")
    async with state.sessionmaker() as db:
        summaries = await store_admin.list_tenants(db)
    return AdminTenantList(tenants=[AdminTenant.of(s) for s in summaries])


@router.post(f"{PREFIX}/tenants", response_model=TenantWithKey, status_code=201)
async def create_tenant(body: TenantCreate, caller: AdminDep, state: StateDep) -> TenantWithKey:
    """Create a tenant and return its API key, shown this once (only its hash is kept).

    409 `tenant_exists` if the name is taken (a revoked tenant is brought back by
    rotating its key, which keeps its end users' sessions).
    """
    _audit(caller, "create_tenant", body.name.strip())
    async with state.sessionmaker() as db, db.begin():
        row, api_key = await store_tenants.create_tenant(
            db, body.name, allow_system_prompt=body.allow_system_prompt
        )
        summary = await store_admin.tenant_summary(db, row)
    return TenantWithKey(tenant=AdminTenant.of(summary), api_key=api_key)


@router.patch(f"{PREFIX}/tenants/{{name}}", response_model=TenantChanged)
async def update_tenant(
    name: str, body: TenantUpdate, caller: AdminDep, state: StateDep
) -> TenantChanged:
    """Change a tenant's options (`allow_system_prompt`); omitted fields stay as they are."""
    _audit(caller, "update_tenant", name)
    async with state.sessionmaker() as db, db.begin():
        row = await store_tenants.update_tenant(
            db, name, allow_system_prompt=body.allow_system_prompt
        )
        summary = await store_admin.tenant_summary(db, row)
    return TenantChanged(tenant=AdminTenant.of(summary))


@router.post(f"{PREFIX}/tenants/{{name}}/rotate", response_model=TenantRotated)
async def rotate_tenant(
    name: str, caller: AdminDep, state: StateDep, body: TenantRotate | None = None
) -> TenantRotated:
    """Issue a new API key for the tenant (shown this once); its end users keep their
    sessions and history. The previous key keeps working for `grace_seconds` (0: it stops
    now). Rotating a revoked tenant reinstates it; its old keys stay refused."""
    grace = (body or TenantRotate()).grace_seconds
    _audit(caller, f"rotate_tenant_key grace={grace}", name)
    async with state.sessionmaker() as db, db.begin():
        rotated = await store_tenants.rotate_tenant_key(db, name, grace_seconds=grace)
        summary = await store_admin.tenant_summary(db, rotated.tenant)
    return TenantRotated(
        tenant=AdminTenant.of(summary),
        api_key=rotated.api_key,
        previous_key_expires_at=rotated.previous_key_expires_at,
    )


@router.post(f"{PREFIX}/tenants/{{name}}/revoke", response_model=TenantChanged)
async def revoke_tenant(name: str, caller: AdminDep, state: StateDep) -> TenantChanged:
    """Revoke the tenant: every key it has is refused (401) from now on. Its sessions
    stay; rotating its key later reinstates it."""
    _audit(caller, "revoke_tenant", name)
    async with state.sessionmaker() as db, db.begin():
        row = await store_tenants.revoke_tenant(db, name)
        summary = await store_admin.tenant_summary(db, row)
    return TenantChanged(tenant=AdminTenant.of(summary))


@router.get("/admin", include_in_schema=False)
async def admin_page() -> FileResponse:
    # The page itself is public; every API call it makes carries the admin token.
    return FileResponse(WEB_DIR / "admin.html", media_type="text/html; charset=utf-8")


__all__ = ["router"]
