"""The session cookie: issued, cleared, read (refusing duplicates), and set on any response."""

from __future__ import annotations

from fastapi import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ...errors import BadRequest
from ..middleware.cross_site import is_cross_site
from .state import GatewayState

COOKIE_MAX_AGE = 400 * 86400  # seconds; browsers cap cookie lifetimes at 400 days


def issue_session_cookie(request: Request, state: GatewayState, session_id: str) -> str:
    """Sign a token for ``session_id`` and have the response set it as the session cookie.

    Security: never on a request another site made (a cross-site request must not
    replace the user's cookie; unsafe ones are already refused at the edge).
    """
    token = state.tokens.issue(session_id)
    if is_cross_site(request.headers):
        return token
    carrier = Response()
    carrier.set_cookie(
        state.cookie_name,
        token,
        # The cookie outlives the session (the token inside still expires with it), so
        # an expired session answers 401 and the page can say so and offer a new one,
        # instead of the browser dropping the cookie and silently starting over.
        max_age=COOKIE_MAX_AGE,
        httponly=True,  # scripts (and XSS) cannot read the identity
        samesite="lax",  # other sites cannot ride it on POSTs
        secure=state.settings.cookie_secure,
        path="/",
    )
    request.state.set_cookie = carrier.headers["set-cookie"]
    return token


def clear_session_cookie(response: Response, state: GatewayState) -> None:
    """Have ``response`` delete the session cookie."""
    response.delete_cookie(
        state.cookie_name,
        path="/",
        httponly=True,
        samesite="lax",
        secure=state.settings.cookie_secure,
    )


def session_cookie(request: Request, name: str) -> str | None:
    """The session cookie's value, or None; ``BadRequest`` if the request carries two.

    Security: with two cookies of one name (one planted by a sibling subdomain, or an
    old path-scoped one) there is no telling which is the user's, and picking either
    lets a planted cookie win; such a request is refused instead.
    """
    values: list[str] = []
    for header in request.headers.getlist("cookie"):
        for pair in header.split(";"):
            key, sep, value = pair.strip().partition("=")
            if sep and key.strip() == name:
                values.append(value.strip().strip('"'))
    if len(set(values)) > 1:
        raise BadRequest(
            "The request carries two session cookies; clear this site's cookies and reload.",
            code="duplicate_session_cookie",
        )
    return values[0] if values else None


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


__all__ = [
    "COOKIE_MAX_AGE",
    "SessionCookieMiddleware",
    "clear_session_cookie",
    "issue_session_cookie",
    "session_cookie",
]
