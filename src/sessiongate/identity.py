"""Who is chatting: anonymous session tokens signed by the gateway.

A session token is an HS256 JWT: ``sub`` = session id, ``iss`` = ``sessiongate``,
``typ`` = ``session``, ``iat``/``exp`` in unix seconds (exp = issue time + idle TTL).
It travels as an HttpOnly SameSite=Lax cookie for browsers or as
``Authorization: Bearer`` for API clients.

Security: identity is only ever what the server verified. A bad token is refused with
401, never replaced by a silently new session, and a client cannot name a user id.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import jwt

from .errors import AuthError

COOKIE_NAME = "sessiongate_session"
_ISSUER = "sessiongate"
_TYPE = "session"
_ALGORITHM = "HS256"


@dataclass(frozen=True, slots=True)
class SessionClaims:
    """The verified content of a session token; times are unix seconds."""

    session_id: str
    issued_at: int
    expires_at: int


class SessionTokens:
    """Issues and verifies session tokens with one secret key.

    ``ttl`` is the token lifetime in seconds (the session idle TTL).
    """

    def __init__(self, secret_key: str, *, ttl: int) -> None:
        if len(secret_key) < 32:
            raise ValueError("the session signing key must be at least 32 characters")
        self._key = secret_key
        self.ttl = ttl

    def issue(self, session_id: str, *, now: float | None = None) -> str:
        """A signed token for ``session_id`` valid for ``ttl`` seconds from ``now``."""
        issued = int(now if now is not None else time.time())
        claims = {
            "iss": _ISSUER,
            "typ": _TYPE,
            "sub": session_id,
            "iat": issued,
            "exp": issued + self.ttl,
        }
        return jwt.encode(claims, self._key, algorithm=_ALGORITHM)

    def verify(self, token: str) -> SessionClaims:
        """Verify ``token`` and return its claims.

        Raises ``AuthError`` with code ``token_expired`` or ``invalid_token``. Only
        HS256 is accepted (no ``alg: none``, no algorithm confusion).
        """
        try:
            claims = jwt.decode(
                token,
                self._key,
                algorithms=[_ALGORITHM],
                issuer=_ISSUER,
                options={"require": ["sub", "iat", "exp", "iss"]},
            )
        except jwt.ExpiredSignatureError as exc:
            raise AuthError(
                "Your session token has expired; start a new session.", code="token_expired"
            ) from exc
        except jwt.PyJWTError as exc:
            raise AuthError(
                "The session token is invalid or was not issued by this gateway.",
                code="invalid_token",
            ) from exc
        if claims.get("typ") != _TYPE or not isinstance(claims["sub"], str):
            raise AuthError("The token is not a session token.", code="invalid_token")
        return SessionClaims(
            session_id=claims["sub"], issued_at=int(claims["iat"]), expires_at=int(claims["exp"])
        )


def bearer_token(authorization: str | None) -> str | None:
    """The token in an ``Authorization: Bearer <token>`` header, or None if absent.

    Raises ``AuthError`` for a malformed header (another scheme, or an empty token).
    """
    if authorization is None:
        return None
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthError("Authorization must be 'Bearer <token>'.", code="invalid_token")
    return token.strip()


__all__ = ["COOKIE_NAME", "SessionClaims", "SessionTokens", "bearer_token"]
