"""Request ids: every request has one, every response returns it, every log line names it.

A pure-ASGI middleware (so streaming responses are covered the same as JSON ones). An
incoming ``X-Request-ID`` is honoured when it is short and of a safe charset (a load
balancer's or a client's id ties their logs to ours); anything else is replaced by a new
random id, so a client cannot inject text into logs or headers through it. The id is:

- returned as ``X-Request-ID`` on the response (error responses and SSE streams too);
- bound into the logging context (structlog contextvars) for the request's duration, so
  every log line written while serving it — ours, uvicorn's access line, a library's —
  carries ``request_id``; work the request starts in a task inherits it;
- kept in ``request.state.request_id`` for handlers that run after the context is gone
  (the 500 handler).
"""

from __future__ import annotations

import re
import uuid

import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

HEADER = "x-request-id"
_HEADER_BYTES = HEADER.encode("ascii")
#: Accepted incoming ids: 1-64 characters of letters, digits and ``._:-`` (UUIDs, ULIDs,
#: most balancers' formats).
_VALID = re.compile(r"[A-Za-z0-9._:\-]{1,64}")


def new_request_id() -> str:
    """A new random request id (32 hex digits)."""
    return uuid.uuid4().hex


def accepted_request_id(value: str | None) -> str | None:
    """``value`` if it is acceptable as a request id, else None."""
    if value is not None and _VALID.fullmatch(value):
        return value
    return None


def _incoming(scope: Scope) -> str | None:
    for name, value in scope.get("headers", ()):
        if name.lower() == _HEADER_BYTES:
            return accepted_request_id(value.decode("latin-1"))
    return None


class RequestIdMiddleware:
    """Gives each HTTP request an id, returns it and binds it into the log context."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _incoming(scope) or new_request_id()
        scope.setdefault("state", {})["request_id"] = request_id
        raw_id = request_id.encode("ascii")

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [
                    (name, value)
                    for name, value in message.get("headers", ())
                    if name.lower() != _HEADER_BYTES
                ]
                headers.append((_HEADER_BYTES, raw_id))
                message = {**message, "headers": headers}
            await send(message)

        tokens = structlog.contextvars.bind_contextvars(request_id=request_id)
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            structlog.contextvars.reset_contextvars(**tokens)
            # Bound by the error handler for this request only (``upstream_logid``).
            structlog.contextvars.unbind_contextvars("upstream_logid")


__all__ = ["HEADER", "RequestIdMiddleware", "accepted_request_id", "new_request_id"]
