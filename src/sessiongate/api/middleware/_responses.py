"""Error responses sent by the edge middlewares, in the API's envelope."""

from __future__ import annotations

import json

from starlette.types import Send


async def send_error(
    send: Send, status: int, code: str, message: str, *, close: bool = False
) -> None:
    """Send ``{"error": {"code", "message"}}`` with ``status``; ``close`` ends the connection."""
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
    ]
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
