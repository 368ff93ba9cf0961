"""Security headers on every response; a strict Content-Security-Policy on the pages.

Every response gets ``X-Content-Type-Options: nosniff`` and ``Referrer-Policy:
same-origin``. Pages and static files (everything outside ``/api`` and ``/v1``) also get
a CSP that allows scripts, styles and requests only from this origin (no inline
script: an injected ``<script>`` would not run) and ``frame-ancestors`` from
``SESSIONGATE_FRAME_ANCESTORS`` (default ``'none'``: no site may frame the chat, so a
framing page cannot overlay or read it); ``'none'`` also sends ``X-Frame-Options:
DENY`` for old browsers. Images may also come from the operator's
``SESSIONGATE_UI_IMAGE_HOSTS`` and the avatar's host (``img_sources``). The API docs'
bundles (Swagger UI, Redoc; served from the package) inject styles, so they only get
``frame-ancestors``.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

_API_PREFIXES = ("/api/", "/v1/", "/metrics")
_DOCS = ("/docs", "/redoc")


def page_policy(frame_ancestors: str, img_sources: tuple[str, ...] = ()) -> str:
    """The pages' Content-Security-Policy with ``frame-ancestors`` set to the setting and
    ``img_sources`` (e.g. ``https://img.example.com``) added to ``img-src``."""
    images = " ".join(("'self'", "data:", *img_sources))
    return (
        f"default-src 'self'; script-src 'self'; style-src 'self'; img-src {images}; "
        "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; "
        f"form-action 'self'; frame-ancestors {frame_ancestors}"
    )


class PageHeadersMiddleware:
    """Adds the security headers (pure ASGI; streaming responses too)."""

    def __init__(
        self, app: ASGIApp, *, frame_ancestors: str = "'none'", img_sources: tuple[str, ...] = ()
    ) -> None:
        self.app = app
        self.frame_ancestors = frame_ancestors.strip() or "'none'"
        self.img_sources = img_sources

    def _headers_for(self, path: str) -> list[tuple[bytes, bytes]]:
        headers = [
            (b"x-content-type-options", b"nosniff"),
            (b"referrer-policy", b"same-origin"),
        ]
        if path.startswith(_API_PREFIXES) or path == "/api":
            return headers
        if path.startswith(_DOCS):
            policy = f"frame-ancestors {self.frame_ancestors}"
        else:
            policy = page_policy(self.frame_ancestors, self.img_sources)
        headers.append((b"content-security-policy", policy.encode("latin-1")))
        if self.frame_ancestors == "'none'":
            headers.append((b"x-frame-options", b"DENY"))
        return headers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        extra = self._headers_for(scope["path"])

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                present = {name.lower() for name, _ in message.get("headers", [])}
                message["headers"] = [
                    *message.get("headers", []),
                    *(h for h in extra if h[0] not in present),
                ]
            await send(message)

        await self.app(scope, receive, send_with_headers)


__all__ = ["PageHeadersMiddleware", "page_policy"]
