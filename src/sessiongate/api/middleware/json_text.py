"""JSON bodies, paths and queries must hold text every database can store.

Refused with 400 before any handler runs (so nothing is stored and no database error
becomes a 500):

- a JSON string with a lone UTF-16 surrogate (``"\\ud800"``): it is not Unicode text
  and cannot be encoded as UTF-8;
- a NUL character (``"\\u0000"``, or ``%00`` in the path or query): PostgreSQL text
  cannot hold it;
- JSON nested deeper than ``MAX_JSON_DEPTH``: Python's parser would recurse until it
  fails.

The body is already capped by ``body_limit``; it is read here once and handed on
unchanged. Cheap byte scans decide when the full check is needed at all.
"""

from __future__ import annotations

import json
import re
from typing import Any

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ._responses import send_error

MAX_JSON_DEPTH = 64
_SUSPECT = re.compile(rb"\\u(?:[dD][89a-fA-F]|0000)|\x00")
_OPENERS = re.compile(rb"[\[{]")


class BadText(ValueError):
    """A JSON value, path or query the store cannot hold; ``code`` and message say why."""

    def __init__(self, message: str, code: str = "invalid_text") -> None:
        super().__init__(message)
        self.code = code


def _check_string(value: str) -> None:
    if "\x00" in value:
        raise BadText("Text may not contain NUL characters.")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise BadText("Text may not contain unpaired UTF-16 surrogates.") from exc


def check_json_text(body: bytes) -> None:
    """Raise ``BadText`` if ``body`` (JSON) is too deep or holds a NUL or lone surrogate.

    Bodies that are not JSON at all are left for the handler to refuse.
    """
    suspect = _SUSPECT.search(body) is not None
    deep = len(_OPENERS.findall(body)) > MAX_JSON_DEPTH
    if not (suspect or deep):
        return
    try:
        parsed = json.loads(body)
    except RecursionError as exc:
        raise BadText(f"JSON may nest at most {MAX_JSON_DEPTH} levels.", "too_deep") from exc
    except ValueError:
        return
    # Iterative walk: the parsed value may be as deep as the parser allowed.
    stack: list[tuple[Any, int]] = [(parsed, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, str):
            _check_string(value)
        elif isinstance(value, (list, dict)):
            if depth > MAX_JSON_DEPTH:
                raise BadText(f"JSON may nest at most {MAX_JSON_DEPTH} levels.", "too_deep")
            if isinstance(value, dict):
                for key, item in value.items():
                    _check_string(key)
                    stack.append((item, depth + 1))
            else:
                stack.extend((item, depth + 1) for item in value)


class JsonTextMiddleware:
    """Refuses bodies, paths and queries the store cannot hold (pure ASGI)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if "\x00" in scope["path"] or b"%00" in scope.get("query_string", b""):
            await send_error(send, 400, "invalid_text", "The URL may not contain NUL characters.")
            return
        content_type = Headers(scope=scope).get("content-type", "")
        if "json" not in content_type.lower():
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                # The client left while sending; let the app see the disconnect.
                await self.app(scope, _replay([message], receive), send)
                return
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        body = b"".join(chunks)
        try:
            check_json_text(body)
        except BadText as exc:
            await send_error(send, 400, exc.code, str(exc))
            return
        replay: Message = {"type": "http.request", "body": body, "more_body": False}
        await self.app(scope, _replay([replay], receive), send)


def _replay(messages: list[Message], receive: Receive) -> Receive:
    """A ``receive`` that returns ``messages`` first, then defers to ``receive``."""
    pending = list(messages)

    async def replayed() -> Message:
        if pending:
            return pending.pop(0)
        return await receive()

    return replayed


__all__ = ["MAX_JSON_DEPTH", "BadText", "JsonTextMiddleware", "check_json_text"]
