"""The caller's session: create one, read it, reset it."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request, Response, status

from ..store import queries as q
from .deps import (
    CurrentSession,
    StateDep,
    admit_new_session,
    clear_session_cookie,
    issue_session_cookie,
)
from .schemas import Conversation, SessionCreated, SessionInfo, SessionReset

router = APIRouter(prefix="/api/session", tags=["session"])


@router.post("", response_model=SessionCreated, status_code=status.HTTP_201_CREATED)
async def create_session(request: Request, state: StateDep) -> SessionCreated:
    """Start a new anonymous session, whatever credentials came with the request.

    The token is returned for API clients (`Authorization: Bearer <token>`) and set as
    an HttpOnly cookie for browsers. It expires after the idle TTL. Limited per client
    address (429 past `SESSIONGATE_SESSION_CREATE_RATE_LIMIT`); 403 `anonymous_disabled`
    when anonymous sessions are turned off.
    """
    await admit_new_session(request, state)
    async with state.sessionmaker() as db, db.begin():
        row = await q.create_session(db, idle_ttl=state.settings.session_idle_ttl)
    token = issue_session_cookie(request, state, row.id)
    claims = state.tokens.verify(token)
    return SessionCreated(
        token=token,
        session_id=row.id,
        expires_at=datetime.fromtimestamp(claims.expires_at, UTC),
    )


@router.get("/info", response_model=SessionInfo)
async def session_info(session: CurrentSession, state: StateDep) -> SessionInfo:
    """Your session: when it started, was last active and expires, and what it holds."""
    async with state.sessionmaker() as db:
        counts = await q.count_session_data(db, session.id)
    return SessionInfo(
        session_id=session.id,
        created_at=session.created_at,
        last_active_at=session.last_active_at,
        expires_at=session.expires_at,
        conversation_count=counts.conversations,
        message_count=counts.messages,
    )


@router.post("/reset", response_model=SessionReset)
async def reset_session(session: CurrentSession, state: StateDep) -> SessionReset:
    """Delete all your conversations and start one empty one. Your identity stays."""
    return SessionReset(conversation=Conversation.of(await state.sessions.reset(session.id)))


@router.get("/export")
async def export(session: CurrentSession, state: StateDep) -> dict[str, Any]:
    """Everything the gateway stores for you: the session, every conversation and message."""
    return await state.sessions.export(session)


@router.delete("", status_code=status.HTTP_204_NO_CONTENT)
async def erase(session: CurrentSession, state: StateDep, request: Request) -> Response:
    """Erase your session: conversations, messages, upstream conversation mappings and the
    cached upstream access token. Your token stops working; the cookie is cleared."""
    await state.sessions.erase(session.id)
    request.state.set_cookie = None
    response = Response(status_code=status.HTTP_204_NO_CONTENT)
    clear_session_cookie(response, state)
    return response


__all__ = ["router"]
