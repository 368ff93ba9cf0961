"""Request bodies are counted in bytes, whatever their framing, and cut at a cap.

A declared ``Content-Length`` over the cap is refused before a byte of the body is
read; a chunked (or lying) body is counted as it arrives and refused the moment it
passes the cap. Either way the answer is 413 ``body_too_large`` with
``Connection: close``, so the server never drains the rest.
"""

from __future__ import annotations

from collections.abc import Callable

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ._responses import send_error


class BodyTooLarge(HTTPException):
    """Raised from ``receive()`` once the body passes the cap (413 ``body_too_large``)."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"The request body exceeds {limit} bytes.")
        self.limit = limit


class BodySizeLimitMiddleware:
    """Caps request bodies at ``limit_for(path)`` bytes (pure ASGI, streaming-safe)."""

    def __init__(self, app: ASGIApp, *, limit_for: Callable[[str], int]) -> None:
        self.app = app
        self.limit_for = limit_for

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope["path"])
        declared = Headers(scope=scope).get("content-length")
        if declared is not None and declared.strip().isdigit() and int(declared) > limit:
            await send_error(
                send, 413, "body_too_large", f"The request body exceeds {limit} bytes.", close=True
            )
            return

        received = 0
        exceeded = False
        started = False

        async def counted_receive() -> Message:
            nonlocal received, exceeded
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    exceeded = True
                    raise BodyTooLarge(limit)
            return message

        async def closing_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                if exceeded:
                    # The rest of the body is never read: end the connection with it.
                    message["headers"] = [*message.get("headers", []), (b"connection", b"close")]
            await send(message)

        try:
            await self.app(scope, counted_receive, closing_send)
        except BodyTooLarge as exc:
            # Code that read the body outside the app's exception handlers.
            if started:
                raise
            await send_error(send, 413, "body_too_large", str(exc.detail), close=True)


__all__ = ["BodySizeLimitMiddleware", "BodyTooLarge"]
