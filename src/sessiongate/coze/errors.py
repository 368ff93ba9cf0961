"""Coze error codes translated into sessiongate's exception tree, in one place.

Sources: Coze OpenAPI error-code table (``COZE_PROTOCOL.md``, "Common envelope and
errors") and the official SDKs' handling (coze-js treats 4013 as a rate limit). Messages
built here are safe to show a client: they carry Coze's numeric code and log id, never
Coze's free-text ``msg`` (logged instead) or a raw body.
"""

from __future__ import annotations

import logging
from typing import Any

from ..errors import UpstreamError

log = logging.getLogger(__name__)

#: Coze: 4100 "authentication invalid"; 700012006 "access token invalid" (seen in the wild).
TOKEN_INVALID_CODES = frozenset({4100, 700012006})
#: Coze: 4016 a chat is already running in this conversation.
CONVERSATION_BUSY_CODE = 4016
#: Coze: 4008 per-user daily limit, 4009 system request limit, 4013 model busy (coze-js
#: treats it as a rate limit), 4020 RPM exceeded.
RATE_LIMIT_CODES = frozenset({4008, 4009, 4013, 4020})
#: Coze: 4006 invalid bot, 4015 bot not published to the API channel, 4200 not published.
NOT_PUBLISHED_CODES = frozenset({4006, 4015, 4200})

#: Seconds a client is told to wait when Coze rate-limits without a Retry-After header.
DEFAULT_RETRY_AFTER = 5
#: 4008 is a per-user *daily* quota: retrying within seconds only burns requests.
DAILY_LIMIT_RETRY_AFTER = 3600


class CozeAuthError(UpstreamError):
    """Coze refused the gateway's credentials: a configuration problem, not a transient one.

    Raised for a 4xx from the OAuth token endpoint and for a chat answered "token
    invalid" even after one fresh token. The message says the service is unavailable,
    with Coze's log id; ``detail`` names the settings to check. Status 502: the client's
    request was fine, the gateway's setup is not.
    """

    status = 502
    code = "upstream_auth_failed"


class CozeTokenInvalid(CozeAuthError):
    """A chat was answered 4100 / 700012006: this session's access token is no longer valid.

    Providers catch it, invalidate the session's cached token and retry the turn once.
    """


#: Coze OAuth ``error_code`` → the settings an operator should check.
_OAUTH_ERROR_HINTS = {
    "invalid_client": (
        "check COZE_OAUTH_CLIENT_ID, COZE_OAUTH_PUBLIC_KEY_ID and that the private key "
        "(COZE_OAUTH_PRIVATE_KEY_FILE / COZE_OAUTH_PRIVATE_KEY) matches the public key "
        "uploaded to that OAuth app"
    ),
    "invalid_request": (
        "check COZE_API_BASE (the JWT audience is its host), SESSIONGATE_COZE_TOKEN_TTL "
        "(at most 86399) and this machine's clock"
    ),
    "unsupported_grant_type": (
        "the OAuth app named by COZE_OAUTH_CLIENT_ID must be a JWT (service) application"
    ),
    "access_deny": (
        "the OAuth app named by COZE_OAUTH_CLIENT_ID is not authorised; grant it the chat "
        "permissions and authorise it for the workspace in the Coze console"
    ),
}
_DEFAULT_HINT = (
    "check COZE_OAUTH_CLIENT_ID, COZE_OAUTH_PUBLIC_KEY_ID, COZE_OAUTH_PRIVATE_KEY_FILE "
    "and COZE_API_BASE"
)


def oauth_refusal(status: int, body: dict[str, Any], logid: str | None) -> CozeAuthError:
    """The error for a refused OAuth JWT exchange: names the settings to check.

    ``body`` is Coze's OAuth-style ``{"error_code", "error_message"}``. Only a known
    ``error_code`` is echoed; ``error_message`` (upstream free text) is logged only.
    """
    error_code = body.get("error_code")
    known = error_code if error_code in _OAUTH_ERROR_HINTS else None
    hint = _OAUTH_ERROR_HINTS.get(known or "", _DEFAULT_HINT)
    label = known or f"HTTP {status}"
    # Coze's error_message goes to the log only (it is upstream free text).
    log.warning(
        "Coze refused the OAuth JWT exchange: status=%s error_code=%s error_message=%.200s "
        "logid=%s",
        status,
        error_code,
        body.get("error_message"),
        logid,
    )
    return CozeAuthError(
        with_logid("The AI service is not available right now (upstream sign-in failed).", logid),
        upstream_code=known or status,
        logid=logid,
        detail=f"Coze refused the OAuth JWT token exchange ({label}): {hint}.",
    )


def parse_code(value: object) -> int | None:
    """Coze's ``code`` as an int; workflow failures send it as a string (``"720702204"``)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value.strip())
    return None


def parse_retry_after(value: str | None) -> int | None:
    """An HTTP ``Retry-After`` header in seconds, or None when absent or a date."""
    if value is None or not value.strip().isdigit():
        return None
    return int(value.strip())


def with_logid(text: str, logid: str | None) -> str:
    """Append Coze's log id to a message so support can find the request in Coze's logs."""
    return f"{text} (Coze logid {logid})" if logid else text


def chat_error(
    code: int | None,
    *,
    logid: str | None,
    http_status: int | None = None,
    retry_after: int | None = None,
) -> UpstreamError:
    """The sessiongate error for a Coze chat/conversation failure.

    ``code`` is Coze's business code (None when Coze gave only an HTTP status);
    ``http_status`` the response status; ``retry_after`` seconds from a header.
    4016 → 409 ``conversation_busy``; 4008/4009/4013/4020 or HTTP 429 → 429
    ``rate_limited`` with ``retry_after``; 4100/700012006 → ``CozeTokenInvalid``;
    anything else → 502 ``upstream_error``. ``logid`` is kept on the error.
    """
    label = f"code {code}" if code is not None else f"HTTP {http_status}"
    if code in TOKEN_INVALID_CODES:
        return CozeTokenInvalid(
            with_logid(f"Coze rejected the session's access token ({label}).", logid),
            upstream_code=code,
            logid=logid,
        )
    if code == CONVERSATION_BUSY_CODE:
        return UpstreamError(
            with_logid(
                "A reply is still being generated in this conversation; wait for it to "
                "finish and try again.",
                logid,
            ),
            code="conversation_busy",
            status=409,
            upstream_code=code,
            logid=logid,
        )
    if code in RATE_LIMIT_CODES or (code is None and http_status == 429):
        if retry_after is None:
            retry_after = DAILY_LIMIT_RETRY_AFTER if code == 4008 else DEFAULT_RETRY_AFTER
        return UpstreamError(
            with_logid(f"Coze is rate-limiting requests ({label}); try again later.", logid),
            code="rate_limited",
            status=429,
            retry_after=retry_after,
            upstream_code=code if code is not None else http_status,
            logid=logid,
        )
    if code in NOT_PUBLISHED_CODES:
        return UpstreamError(
            with_logid(f"Coze cannot run the configured bot or workflow ({label}).", logid),
            upstream_code=code,
            logid=logid,
            detail=f"Coze {label}: check COZE_BOT_ID / COZE_WORKFLOW_ID / COZE_APP_ID and "
            "that the bot or workflow is published to the API channel.",
        )
    return UpstreamError(
        with_logid(f"Coze could not produce a reply ({label}).", logid),
        upstream_code=code if code is not None else http_status,
        logid=logid,
    )


__all__ = [
    "CONVERSATION_BUSY_CODE",
    "CozeAuthError",
    "CozeTokenInvalid",
    "RATE_LIMIT_CODES",
    "TOKEN_INVALID_CODES",
    "chat_error",
    "oauth_refusal",
    "parse_code",
    "parse_retry_after",
    "with_logid",
]
