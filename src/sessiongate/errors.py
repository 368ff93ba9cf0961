"""The one exception tree of sessiongate.

Every error a client can see is a ``SessiongateError``. Each carries the HTTP status,
a stable machine-readable ``code`` and a human ``message``; ``api.errors`` translates
them to ``{"error": {"code", "message"}}`` in one place. Foreign errors (httpx,
openai, cozepy, SQLAlchemy, llama.cpp) are mapped to these where they enter.
"""

from __future__ import annotations


class SessiongateError(Exception):
    """Base of every error that may reach a client.

    Attributes: ``status`` (HTTP status), ``code`` (stable snake_case string),
    ``message`` (for the caller: never a secret, a setting's name, an internal URL or
    upstream text), ``detail`` (for the log and operators: what exactly went wrong and
    which setting to check; never sent to a client), ``retry_after`` (seconds, or None).
    """

    status: int = 500
    code: str = "internal_error"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        status: int | None = None,
        retry_after: int | None = None,
        detail: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status
        self.retry_after = retry_after

    def headers(self) -> dict[str, str]:
        """HTTP headers the error response must carry (e.g. ``Retry-After``)."""
        return {"Retry-After": str(self.retry_after)} if self.retry_after is not None else {}


class BadRequest(SessiongateError):
    """The request is malformed or breaks a limit (400 unless a subclass says otherwise)."""

    status = 400
    code = "bad_request"


class PayloadTooLarge(BadRequest):
    """A message or body exceeds a configured size limit (413)."""

    status = 413
    code = "payload_too_large"


class AuthError(SessiongateError):
    """Credentials are missing, forged, tampered, expired or revoked (401)."""

    status = 401
    code = "unauthorized"


class Forbidden(SessiongateError):
    """The caller is known but may not do this (403)."""

    status = 403
    code = "forbidden"


class NotFound(SessiongateError):
    """The resource does not exist *for this caller*.

    Security: another session's ids raise exactly this, so a caller cannot tell a
    foreign id from one that never existed.
    """

    status = 404
    code = "not_found"


class Conflict(SessiongateError):
    """The resource is busy or in a conflicting state (409)."""

    status = 409
    code = "conflict"


class SessionBusy(Conflict):
    """A turn of this session is still running and did not finish within
    ``SESSIONGATE_TURN_WAIT`` (409 ``session_busy``, with Retry-After)."""

    code = "session_busy"


class RateLimited(SessiongateError):
    """Too many requests; ``retry_after`` says when to come back (429)."""

    status = 429
    code = "rate_limited"


class ServiceBusy(SessiongateError):
    """The gateway cannot take more work right now (503 with Retry-After)."""

    status = 503
    code = "service_busy"


class DatabaseUnavailable(ServiceBusy):
    """The database refused connections, is starting or stopping, or no pooled
    connection came free in time (503 with Retry-After); ``store.database`` maps the
    driver's errors to it."""

    code = "database_unavailable"


class ConfigurationError(SessiongateError):
    """A setting is missing or malformed; names the setting. Raised at start-up."""

    status = 500
    code = "configuration_error"


class UpstreamError(SessiongateError):
    """The provider failed to produce a reply (502).

    ``upstream_code`` is the provider's own error code when it gave one and ``logid``
    its request/log id, kept for support and never a secret.
    """

    status = 502
    code = "upstream_error"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        status: int | None = None,
        retry_after: int | None = None,
        upstream_code: str | int | None = None,
        logid: str | None = None,
        detail: str | None = None,
    ) -> None:
        super().__init__(message, code=code, status=status, retry_after=retry_after, detail=detail)
        self.upstream_code = upstream_code
        self.logid = logid


class UpstreamTimeout(UpstreamError):
    """The provider did not answer within a configured timeout (504)."""

    status = 504
    code = "upstream_timeout"


class UpstreamUnavailable(UpstreamError):
    """The provider could not be reached or refused the connection (502)."""

    status = 502
    code = "upstream_unavailable"


class ContextOverflow(UpstreamError):
    """The newest message alone does not fit the model's context window (413)."""

    status = 413
    code = "context_overflow"


__all__ = [
    "AuthError",
    "BadRequest",
    "ConfigurationError",
    "Conflict",
    "ContextOverflow",
    "DatabaseUnavailable",
    "Forbidden",
    "NotFound",
    "PayloadTooLarge",
    "RateLimited",
    "ServiceBusy",
    "SessionBusy",
    "SessiongateError",
    "UpstreamError",
    "UpstreamTimeout",
    "UpstreamUnavailable",
]
