"""Who is calling: credentials verified into a ``Caller``; the admin guard."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Annotated, Literal

from fastapi import Depends, Request

from ...errors import AuthError, Forbidden
from ...identity import (
    IdentityClaims,
    bearer_token,
    is_admin_token,
    is_session_token,
    token_issuer,
)
from ...store import TenantRow
from ...store.tenants import is_api_key, tenant_for_api_key
from ..clients import client_address
from .cookies import session_cookie
from .state import GatewayState, StateDep


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
        cookie = session_cookie(request, state.cookie_name)
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
    if admin is None and "." not in token:
        # Not a JWT: most likely someone signing in to /admin on a gateway without an
        # admin token. Say so, instead of an error that reads like a typo.
        raise AuthError(
            "The bearer token is not valid here. If it is meant as the admin token: this "
            "gateway has none (SESSIONGATE_ADMIN_TOKEN is not set); set it and restart.",
            code="invalid_token",
        )
    raise AuthError("The bearer token is not valid here.", code="invalid_token")


CallerDep = Annotated[Caller, Depends(identify_caller)]


def caller_address(request: Request, state: GatewayState) -> str:
    """The client address per-client limits count (``api.clients``)."""
    return client_address(request, state.trusted_proxies)


async def require_admin(request: Request, state: StateDep) -> Caller:
    """Admins only: 401 without (or with bad) credentials, 403 for any non-admin identity.

    Every refusal is logged to ``sessiongate.admin`` (who, what, why; never a credential).
    """
    try:
        caller = await identify_caller(request, state)
    except AuthError as exc:
        _log_admin_denied(request, "unverified", exc.code)
        raise
    if caller.kind == "none":
        _log_admin_denied(request, caller.label, "unauthorized")
        raise AuthError("Admin credentials are required.", code="unauthorized")
    if not caller.is_admin:
        _log_admin_denied(request, caller.label, "admin_required")
        raise Forbidden("This needs admin rights.", code="admin_required")
    return caller


def _log_admin_denied(request: Request, who: str, why: str) -> None:
    # Security: an operator sees who probed the admin API; the log renderer escapes the
    # path, so an id with a line break cannot forge a line.
    logging.getLogger("sessiongate.admin").warning(
        "admin access denied: %s %s by=%s from=%s reason=%s",
        request.method,
        request.scope.get("path", ""),
        who,
        request.client.host if request.client else None,
        why,
    )


AdminDep = Annotated[Caller, Depends(require_admin)]


__all__ = [
    "AdminDep",
    "Caller",
    "CallerDep",
    "caller_address",
    "identify_caller",
    "require_admin",
]
