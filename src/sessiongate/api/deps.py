"""FastAPI dependencies: the app's state, the verified caller's session, JSON guards."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..chat import ChatService, SessionLocks
from ..config import Settings
from ..errors import AuthError, BadRequest, Forbidden, PayloadTooLarge
from ..identity import COOKIE_NAME, SessionTokens, bearer_token
from ..providers import Provider
from ..store import DbSession, SessionRow
from ..store import queries as q
from ..store.models import utcnow


@dataclass(slots=True)
class GatewayState:
    """Everything long-lived, owned by the app's lifespan."""

    settings: Settings
    engine: AsyncEngine
    sessionmaker: async_sessionmaker[DbSession]
    tokens: SessionTokens
    provider: Provider
    locks: SessionLocks
    chat: ChatService


def get_state(request: Request) -> GatewayState:
    state: GatewayState = request.app.state.gateway
    return state


StateDep = Annotated[GatewayState, Depends(get_state)]


def issue_session_cookie(request: Request, state: GatewayState, session_id: str) -> str:
    """Sign a token for ``session_id`` and have the response set it as the session cookie."""
    token = state.tokens.issue(session_id)
    carrier = Response()
    carrier.set_cookie(
        COOKIE_NAME,
        token,
        max_age=state.tokens.ttl,
        httponly=True,  # scripts (and XSS) cannot read the identity
        samesite="lax",  # other sites cannot ride it on POSTs
        secure=state.settings.cookie_secure,
        path="/",
    )
    request.state.set_cookie = carrier.headers["set-cookie"]
    return token


class SessionCookieMiddleware:
    """Adds the ``Set-Cookie`` a dependency asked for to any response, streaming ones too.

    (FastAPI merges a dependency's ``Response`` headers only into non-Response returns.)
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_cookie(message: Message) -> None:
            if message["type"] == "http.response.start":
                cookie = scope.get("state", {}).get("set_cookie")
                if cookie:
                    message["headers"] = [
                        *message.get("headers", []),
                        (b"set-cookie", cookie.encode("latin-1")),
                    ]
            await send(message)

        await self.app(scope, receive, send_with_cookie)


async def current_session(request: Request, state: StateDep) -> SessionRow:
    """The caller's session, from ``Authorization: Bearer`` or the session cookie.

    No credentials: a new anonymous session is created and its cookie set. A forged,
    tampered or expired token, or one whose session was deleted or has expired, is a
    401 — never silently replaced (that would hide a stolen-cookie or clock problem).
    """
    if request.headers.get("x-sessiongate-user") is not None:
        raise Forbidden("Only API-key callers may name an end user.", code="user_not_allowed")
    token = bearer_token(request.headers.get("authorization"))
    from_cookie = False
    if token is None:
        token = request.cookies.get(COOKIE_NAME)
        from_cookie = token is not None
    if token is None:
        async with state.sessionmaker() as db, db.begin():
            row = await q.create_session(db, idle_ttl=state.settings.session_idle_ttl)
        issue_session_cookie(request, state, row.id)
        return row
    claims = state.tokens.verify(token)
    async with state.sessionmaker() as db:
        found = await q.get_session(db, claims.session_id)
    if found is None:
        raise AuthError("This session no longer exists; start a new one.", code="session_not_found")
    if found.expires_at <= utcnow():
        raise AuthError(
            "This session expired after inactivity; start a new one.", code="session_expired"
        )
    if from_cookie and time.time() - claims.issued_at > state.tokens.ttl / 10:
        # Sliding expiry for browsers: the cookie follows the session's idle TTL.
        issue_session_cookie(request, state, found.id)
    return found


CurrentSession = Annotated[SessionRow, Depends(current_session)]


def require_json(request: Request, state: StateDep) -> None:
    """Refuse non-JSON bodies (415) and bodies too large to hold a valid message (413)."""
    content_type = request.headers.get("content-type", "")
    if content_type.split(";")[0].strip().lower() != "application/json":
        raise BadRequest(
            "Send the body as JSON with 'Content-Type: application/json'.",
            code="unsupported_media_type",
            status=415,
        )
    # JSON escapes can take 6 bytes per character; anything larger cannot be valid.
    limit = state.settings.max_message_chars * 6 + 16_384
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise PayloadTooLarge(f"The request body exceeds {limit} bytes.", code="body_too_large")


JsonBody = Depends(require_json)


def refuse_named_user(user_id: str | None, user: str | None) -> None:
    """Security: a session caller may not choose who it is (the old backend's IDOR)."""
    if user_id is not None or user is not None:
        raise Forbidden(
            "user_id cannot be chosen by the client; identity comes from your session token.",
            code="user_not_allowed",
        )


__all__ = [
    "CurrentSession",
    "GatewayState",
    "JsonBody",
    "SessionCookieMiddleware",
    "StateDep",
    "current_session",
    "get_state",
    "issue_session_cookie",
    "refuse_named_user",
    "require_json",
]
