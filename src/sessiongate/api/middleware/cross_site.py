"""Cross-site request forgery: state-changing requests must come from this origin, as JSON.

Security: the session cookie rides along on requests a browser makes for another site
(a form auto-submitted from an attacker's page, or from a sibling subdomain, which is
"same-site" and so gets even ``SameSite=Lax`` cookies). Every ``POST``/``PUT``/
``PATCH``/``DELETE`` is therefore refused with 403 ``cross_site_request`` when

- ``Sec-Fetch-Site`` (sent by every current browser) is anything but ``same-origin``
  or ``none`` (typed by the user), or
- without it, ``Origin`` names another origin than the request's own ``Host``;

and with 415 ``unsupported_media_type`` when it carries a body that is not
``application/json`` (HTML forms can only send urlencoded, multipart or text bodies,
and a cross-origin JSON request needs a CORS preflight this gateway never grants).
Requests without either header (API clients, curl) pass: they carry no ambient cookie
worth forging. A refused request runs no handler, so it never mints a session or sets
a cookie.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from ._responses import send_error

UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_SAME = frozenset({"same-origin", "none"})
_DEFAULT_PORTS = {"http": 80, "https": 443}


def _host_port(host: str, scheme: str) -> tuple[str, int | None]:
    parts = urlsplit(f"//{host}")
    try:
        port = parts.port
    except ValueError:
        port = None
    return (parts.hostname or "").lower(), port or _DEFAULT_PORTS.get(scheme)


def is_cross_site(headers: Headers) -> bool:
    """Whether the browser says this request was made by another site or origin.

    ``Sec-Fetch-Site`` decides when present; otherwise ``Origin`` is compared with
    ``Host`` (scheme aside: a TLS-terminating proxy changes it, not the host).
    """
    fetch_site = headers.get("sec-fetch-site")
    if fetch_site is not None:
        return fetch_site.strip().lower() not in _SAME
    origin = headers.get("origin")
    if origin is None:
        return False
    if origin.strip().lower() == "null":  # sandboxed frames, data: URLs, file:
        return True
    parsed = urlsplit(origin.strip())
    if not parsed.scheme or not parsed.netloc:
        return True
    host = headers.get("x-forwarded-host") or headers.get("host") or ""
    origin_host = _host_port(parsed.netloc, parsed.scheme)
    # The Host header has no scheme; accept the origin's default port for either scheme.
    request_host, request_port = _host_port(host, parsed.scheme)
    return origin_host != (request_host, request_port)


def _is_json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )


def _has_body(headers: Headers) -> bool:
    length = headers.get("content-length")
    if headers.get("transfer-encoding"):
        return True
    return length is not None and length.strip() not in ("", "0")


class CrossSiteMiddleware:
    """Refuses cross-site and non-JSON state-changing requests (pure ASGI)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in UNSAFE_METHODS:
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        if is_cross_site(headers):
            await send_error(
                send,
                403,
                "cross_site_request",
                "This request came from another site; it was refused to protect your session.",
            )
            return
        content_type = headers.get("content-type")
        if (content_type is not None or _has_body(headers)) and not _is_json(content_type or ""):
            await send_error(
                send,
                415,
                "unsupported_media_type",
                "Send the body as JSON with 'Content-Type: application/json'.",
            )
            return
        await self.app(scope, receive, send)


__all__ = ["CrossSiteMiddleware", "is_cross_site"]
