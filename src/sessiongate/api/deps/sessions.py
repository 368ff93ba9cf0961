"""The session a request acts in: resolved from the verified caller, created only when
someone chats, and the end-user name a tenant may give."""

from __future__ import annotations

import time
import unicodedata
from typing import Annotated, Any

from fastapi import Depends, Request
from sqlalchemy.exc import IntegrityError

from ...errors import AuthError, BadRequest, Forbidden
from ...store import SessionRow
from ...store import queries as q
from ...store.models import utcnow
from .callers import Caller, CallerDep, caller_address
from .cookies import issue_session_cookie
from .state import GatewayState, StateDep


async def admit_new_session(request: Request, state: GatewayState) -> None:
    """Check that this client may start an anonymous session now, and count it.

    Raises ``Forbidden`` (403 ``anonymous_disabled``) under ``SESSIONGATE_ANONYMOUS=false``
    and ``RateLimited`` (429) past ``SESSIONGATE_SESSION_CREATE_RATE_LIMIT`` per client.
    """
    if not state.settings.anonymous:
        raise Forbidden(
            "Anonymous sessions are turned off here; authenticate with your credentials.",
            code="anonymous_disabled",
        )
    if state.clients is not None:
        await state.clients.hit_session_created(caller_address(request, state))


def normalize_user(named_user: str) -> str:
    """A tenant's end-user name in NFC; ``BadRequest`` if empty, too long or with controls.

    NFC: the same name typed with composed or decomposed accents is one user, not two.
    """
    name = unicodedata.normalize("NFC", named_user)
    if not name.strip():
        raise BadRequest(
            "Name the end user with 'user' in the body or the X-Sessiongate-User header.",
            code="user_required",
        )
    if len(name) > 255:
        raise BadRequest("The user name is longer than 255 characters.", code="invalid_user")
    if any(unicodedata.category(ch) == "Cc" for ch in name):
        raise BadRequest("The user name may not contain control characters.", code="invalid_user")
    return name


async def resolve_session(
    request: Request, state: GatewayState, caller: Caller, named_user: str | None
) -> SessionRow:
    """The session a chat turn acts in (creating an anonymous one if needed).

    No credentials: a new anonymous session (its cookie set), counted against the
    client's session-creation limit. Otherwise as ``existing_session``. Anonymous
    turns (new session or session token) also count against the client's
    ``SESSIONGATE_ANONYMOUS_RATE_LIMIT``.
    """
    if caller.kind in ("none", "session"):
        if not state.settings.anonymous:
            raise AuthError(
                "Anonymous sessions are turned off here; authenticate with your credentials.",
                code="anonymous_disabled",
            )
        if named_user is not None:
            raise _user_not_allowed()
        if state.clients is not None:
            await state.clients.hit_anonymous_turn(caller_address(request, state))
    if caller.kind == "none":
        await admit_new_session(request, state)
        async with state.sessionmaker() as db, db.begin():
            row = await q.create_session(db, idle_ttl=state.settings.session_idle_ttl)
        issue_session_cookie(request, state, row.id)
        return row
    return await existing_session(request, state, caller, named_user)


def _user_not_allowed() -> Forbidden:
    return Forbidden(
        "user_id cannot be chosen by the client; identity comes from your credentials.",
        code="user_not_allowed",
    )


async def existing_session(
    request: Request, state: GatewayState, caller: Caller, named_user: str | None
) -> SessionRow:
    """The session this (non-turn) request acts in; never creates an anonymous one.

    No credentials: 401 ``credentials_required`` (and nothing is written). Session
    token: that session, 401 if deleted or expired — never silently replaced (that
    would hide a stolen-cookie or clock problem). Tenant API key: the session of
    (tenant, ``named_user``), ``named_user`` required. IdP JWT: the session of (issuer,
    subject). Security: only API-key callers may name a user (403 otherwise: the old
    backend let any client read anyone's context by sending their id).
    """
    if caller.kind == "tenant":
        assert caller.tenant is not None
        if named_user is None:
            raise BadRequest(
                "Name the end user with 'user' in the body or the X-Sessiongate-User header.",
                code="user_required",
            )
        named_user = normalize_user(named_user)
        return await _named_session(
            state,
            kind="tenant",
            principal=f"tenant:{caller.tenant.id}:{named_user}",
            tenant_id=caller.tenant.id,
            external_user=named_user,
        )
    if named_user is not None:
        raise _user_not_allowed()
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
        raise AuthError(
            "Start a session first (POST /api/session, or send a chat message) or send your "
            "credentials.",
            code="credentials_required",
        )
    if not state.settings.anonymous:
        raise AuthError(
            "Anonymous sessions are turned off here; authenticate with your credentials.",
            code="anonymous_disabled",
        )
    assert caller.session_id is not None and caller.issued_at is not None
    found = await q.find_session(state.reader, caller.session_id)
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
    """The caller's existing session (end-user name, if any, from ``X-Sessiongate-User``)."""
    return await existing_session(request, state, caller, named_user_header(request))


def pick_named_user(request: Request, *candidates: str | None) -> str | None:
    """The end user named in the body (``user``/``user_id``) or the header.

    Raises ``BadRequest`` if they name different users.
    """
    names = {c for c in (*candidates, named_user_header(request)) if c is not None}
    if len(names) > 1:
        raise BadRequest("The body and header name different users.", code="user_mismatch")
    return names.pop() if names else None


CurrentSession = Annotated[SessionRow, Depends(current_session)]


__all__ = [
    "CurrentSession",
    "admit_new_session",
    "current_session",
    "existing_session",
    "named_user_header",
    "normalize_user",
    "pick_named_user",
    "resolve_session",
]
