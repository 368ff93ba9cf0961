"""Who is chatting: session tokens signed by the gateway, identity-provider JWTs,
tenants' API keys (``store.tenants``) and the admin token.

A session token is an HS256 JWT: ``sub`` = session id, ``iss`` = ``sessiongate``,
``typ`` = ``session``, ``iat``/``exp`` in unix seconds (exp = issue time + idle TTL).
It travels as an HttpOnly SameSite=Lax cookie for browsers or as
``Authorization: Bearer`` for API clients.

Security: identity is only ever what the server verified. A bad token is refused with
401, never replaced by a silently new session, and a client cannot name a user id.
"""

from __future__ import annotations

import hmac
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt

from .errors import AuthError, ConfigurationError

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


def token_issuer(token: str) -> str | None:
    """The ``iss`` claim of a JWT, *unverified* — only to route it to the right verifier."""
    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        return None
    issuer = claims.get("iss")
    return issuer if isinstance(issuer, str) else None


def is_session_token(token: str) -> bool:
    """Whether ``token`` claims to be one of this gateway's session tokens."""
    return token_issuer(token) == _ISSUER


# Only asymmetric algorithms: an HS* token "signed" with the public key must fail.
_ASYMMETRIC = {
    "RS256",
    "RS384",
    "RS512",
    "ES256",
    "ES384",
    "ES512",
    "PS256",
    "PS384",
    "PS512",
    "EdDSA",
}


@dataclass(frozen=True, slots=True)
class IdentityClaims:
    """A verified identity-provider JWT: who (``issuer``, ``subject``), and the claims."""

    issuer: str
    subject: str
    claims: dict[str, Any]


class IdentityProviderVerifier:
    """Verifies bearer JWTs of one identity provider.

    Keys come from a PEM public key file or a JWKS document on disk (``kid`` selects
    the key). ``issuer`` and ``audience`` must match; ``exp`` is required. Raises
    ``ConfigurationError`` at construction for unusable keys or algorithms.
    """

    def __init__(
        self,
        *,
        issuer: str,
        audience: str,
        algorithms: list[str],
        public_key_file: Path | None = None,
        jwks_file: Path | None = None,
        admin_claim: str | None = None,
    ) -> None:
        unsafe = set(algorithms) - _ASYMMETRIC
        if unsafe or not algorithms:
            raise ConfigurationError(
                "SESSIONGATE_JWT_ALGORITHMS may list only asymmetric algorithms, "
                f"not {sorted(unsafe)}."
            )
        self.issuer = issuer
        self._audience = audience
        self._algorithms = algorithms
        self._key: Any = None
        self._jwks: jwt.PyJWKSet | None = None
        try:
            if jwks_file is not None:
                self._jwks = jwt.PyJWKSet.from_dict(json.loads(jwks_file.read_text("utf-8")))
            elif public_key_file is not None:
                self._key = public_key_file.read_text("utf-8")
            else:
                raise ConfigurationError(
                    "Set SESSIONGATE_JWT_PUBLIC_KEY_FILE or SESSIONGATE_JWT_JWKS_FILE."
                )
        except (OSError, ValueError, jwt.PyJWTError) as exc:
            raise ConfigurationError(f"Cannot read the identity provider's keys: {exc}") from exc
        self._admin_claim: tuple[str, str] | None = None
        if admin_claim:
            name, sep, value = admin_claim.partition("=")
            if not sep or not name:
                raise ConfigurationError("SESSIONGATE_JWT_ADMIN_CLAIM must look like claim=value.")
            self._admin_claim = (name, value)

    def _key_for(self, token: str) -> Any:
        if self._jwks is None:
            return self._key
        kid = jwt.get_unverified_header(token).get("kid")
        for key in self._jwks.keys:
            if kid is None or key.key_id == kid:
                return key
        raise AuthError("The token's signing key is unknown.", code="invalid_token")

    def verify(self, token: str) -> IdentityClaims:
        """Verify signature, algorithm, issuer, audience and expiry; raises ``AuthError``."""
        try:
            claims = jwt.decode(
                token,
                self._key_for(token),
                algorithms=self._algorithms,
                issuer=self.issuer,
                audience=self._audience,
                options={"require": ["exp", "iss", "sub"]},
            )
        except jwt.ExpiredSignatureError as exc:
            raise AuthError("The identity token has expired.", code="token_expired") from exc
        except (jwt.PyJWTError, ValueError, TypeError) as exc:
            raise AuthError("The identity token is invalid.", code="invalid_token") from exc
        subject = claims["sub"]
        if not isinstance(subject, str) or not subject:
            raise AuthError("The identity token has no subject.", code="invalid_token")
        return IdentityClaims(issuer=claims["iss"], subject=subject, claims=claims)

    def is_admin(self, identity: IdentityClaims) -> bool:
        """Whether the configured admin claim is present with its value."""
        if self._admin_claim is None:
            return False
        name, value = self._admin_claim
        found = identity.claims.get(name)
        return found == value or (isinstance(found, list) and value in found)


def is_admin_token(token: str, admin_token: str | None) -> bool:
    """Constant-time comparison of a bearer token with the admin token."""
    return admin_token is not None and hmac.compare_digest(token.encode(), admin_token.encode())


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


__all__ = [
    "COOKIE_NAME",
    "IdentityClaims",
    "IdentityProviderVerifier",
    "SessionClaims",
    "SessionTokens",
    "bearer_token",
    "is_admin_token",
    "is_session_token",
    "token_issuer",
]
