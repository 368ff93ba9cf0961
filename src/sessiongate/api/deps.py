"""FastAPI dependencies: the app's state, the verified caller's session, JSON guards."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from fastapi import Depends, Request
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..chat import ChatService, SessionLocks
from ..config import Settings
from ..errors import AuthError, BadRequest, Forbidden, PayloadTooLarge
from ..identity import (
    COOKIE_NAME,
    IdentityClaims,
    IdentityProviderVerifier,
    SessionTokens,
    bearer_token,
    is_admin_token,
    is_session_token,
    token_issuer,
)
from ..providers import Provider
from ..store import DbSession, SessionRow, TenantRow
from ..store import queries as q
from ..store.models import utcnow
from ..store.tenants import is_api_key, tenant_for_api_key


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
    idp: IdentityProviderVerifier | None = None


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


@dataclass(frozen=True, slots=True)
class Caller:
    """Who sent the request, as verified from its credentials.

    ``kind``: ``none`` (no credentials), ``session`` (a session token, header or cookie),
    ``tenant`` (a tenant's API key), ``idp`` (an identity-provider JWT) or ``admin`` (the
    admin token). ``is_admin`` is also true for an IdP JWT carrying the admin claim.
    """

    kind: Literal["none", "session", "tenant", "idp", "admin"]
    session_id: str | None = None
    issued_at: int | None = None
    from_cookie: bool = False
    tenant: TenantRow | None = None
    identity: IdentityClaims | None = None
    is_admin: bool = False

    @property
    def label(self) -> str:
        """Who this is, for audit logs (never a secret)."""
        if self.kind == "tenant" and self.tenant is not None:
            return f"tenant:{self.tenant.name}"
        if self.kind == "idp" and self.identity is not None:
            return f"idp:{self.identity.issuer}:{self.identity.subject}"
        if self.kind == "session":
            return f"session:{self.session_id}"
        return self.kind


async def identify_caller(request: Request, state: StateDep) -> Caller:
    """Verify the request's credentials; raises ``AuthError`` (401) for bad ones.

    ``Authorization: Bearer`` wins over the cookie. A bearer value is, by shape: a
    tenant API key (``sgk_...``), the admin token, a session token (``iss`` is
    ``sessiongate``) or an identity-provider JWT (``iss`` is the configured issuer).
    """
    token = bearer_token(request.headers.get("authorization"))
    if token is None:
        cookie = request.cookies.get(COOKIE_NAME)
        if cookie is None:
            return Caller("none")
        claims = state.tokens.verify(cookie)
        return Caller(
            "session", session_id=claims.session_id, issued_at=claims.issued_at, from_cookie=True
        )
    if is_api_key(token):
        async with state.sessionmaker() as db:
            tenant = await tenant_for_api_key(db, token)
        if tenant is None:
            raise AuthError("The API key is not valid.", code="invalid_api_key")
        if tenant.revoked_at is not None:
            raise AuthError("The API key has been revoked.", code="api_key_revoked")
        return Caller("tenant", tenant=tenant)
    admin = state.settings.admin_token
    if is_admin_token(token, admin.get_secret_value() if admin else None):
        return Caller("admin", is_admin=True)
    if is_session_token(token):
        claims = state.tokens.verify(token)
        return Caller("session", session_id=claims.session_id, issued_at=claims.issued_at)
    if state.idp is not None and token_issuer(token) == state.idp.issuer:
        identity = state.idp.verify(token)
        return Caller("idp", identity=identity, is_admin=state.idp.is_admin(identity))
    raise AuthError("The bearer token is not valid here.", code="invalid_token")


CallerDep = Annotated[Caller, Depends(identify_caller)]


async def resolve_session(
    request: Request, state: GatewayState, caller: Caller, named_user: str | None
) -> SessionRow:
    """The session this request acts in.

    No credentials: a new anonymous session (its cookie set). Session token: that
    session, 401 if deleted or expired — never silently replaced (that would hide a
    stolen-cookie or clock problem). Tenant API key: the session of (tenant,
    ``named_user``), ``named_user`` required. IdP JWT: the session of (issuer, subject).
    Security: only API-key callers may name a user (403 otherwise: the old backend let
    any client read anyone's context by sending their id).
    """
    if caller.kind == "tenant":
        assert caller.tenant is not None
        if named_user is None or not named_user.strip():
            raise BadRequest(
                "Name the end user with 'user' in the body or the X-Sessiongate-User header.",
                code="user_required",
            )
        if len(named_user) > 255:
            raise BadRequest("The user name is longer than 255 characters.", code="invalid_user")
        return await _named_session(
            state,
            kind="tenant",
            principal=f"tenant:{caller.tenant.id}:{named_user}",
            tenant_id=caller.tenant.id,
            external_user=named_user,
        )
    if named_user is not None:
        raise Forbidden(
            "user_id cannot be chosen by the client; identity comes from your credentials.",
            code="user_not_allowed",
        )
    if caller.kind == "admin":
        raise Forbidden("The admin token is not a chat identity.", code="admin_not_a_user")
    if caller.kind == "idp":
        assert caller.identity is not None
        return await _named_session(
            state,
            kind="idp",
            principal=f"idp:{caller.identity.issuer}:{caller.identity.subject}",
            issuer=caller.identity.issuer,
            external_user=caller.identity.subject,
        )
    if caller.kind == "none":
        async with state.sessionmaker() as db, db.begin():
            row = await q.create_session(db, idle_ttl=state.settings.session_idle_ttl)
        issue_session_cookie(request, state, row.id)
        return row
    assert caller.session_id is not None and caller.issued_at is not None
    async with state.sessionmaker() as db:
        found = await q.get_session(db, caller.session_id)
    if found is None:
        raise AuthError("This session no longer exists; start a new one.", code="session_not_found")
    if found.expires_at <= utcnow():
        raise AuthError(
            "This session expired after inactivity; start a new one.", code="session_expired"
        )
    if caller.from_cookie and time.time() - caller.issued_at > state.tokens.ttl / 10:
        # Sliding expiry for browsers: the cookie follows the session's idle TTL.
        issue_session_cookie(request, state, found.id)
    return found


async def _named_session(state: GatewayState, **identity: Any) -> SessionRow:
    for attempt in range(2):
        try:
            async with state.sessionmaker() as db, db.begin():
                return await q.session_for_principal(
                    db, idle_ttl=state.settings.session_idle_ttl, **identity
                )
        except IntegrityError:
            # Two first requests of one identity raced; the other one created it.
            if attempt:
                raise
    raise AssertionError("unreachable")


def named_user_header(request: Request) -> str | None:
    return request.headers.get("x-sessiongate-user")


async def current_session(request: Request, state: StateDep, caller: CallerDep) -> SessionRow:
    """The caller's session (end-user name, if any, from ``X-Sessiongate-User``)."""
    return await resolve_session(request, state, caller, named_user_header(request))


def pick_named_user(request: Request, *candidates: str | None) -> str | None:
    """The end user named in the body (``user``/``user_id``) or the header.

    Raises ``BadRequest`` if they name different users.
    """
    names = {c for c in (*candidates, named_user_header(request)) if c is not None}
    if len(names) > 1:
        raise BadRequest("The body and header name different users.", code="user_mismatch")
    return names.pop() if names else None


async def require_admin(caller: CallerDep) -> Caller:
    """Admins only: 401 without credentials, 403 for any non-admin identity."""
    if caller.kind == "none":
        raise AuthError("Admin credentials are required.", code="unauthorized")
    if not caller.is_admin:
        raise Forbidden("This needs admin rights.", code="admin_required")
    return caller


AdminDep = Annotated[Caller, Depends(require_admin)]


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


__all__ = [
    "AdminDep",
    "Caller",
    "CallerDep",
    "CurrentSession",
    "GatewayState",
    "JsonBody",
    "SessionCookieMiddleware",
    "StateDep",
    "current_session",
    "get_state",
    "identify_caller",
    "issue_session_cookie",
    "pick_named_user",
    "require_admin",
    "require_json",
    "resolve_session",
]
