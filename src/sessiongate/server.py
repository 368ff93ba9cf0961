"""The HTTP server's edge limits: what uvicorn must refuse before the app sees a request.

``server_options(settings)`` returns the keyword arguments that ``sessiongate serve``
(and the tests' loopback servers) pass to uvicorn. They select ``EdgeHttpToolsProtocol``,
uvicorn's httptools (llhttp) protocol with three limits the stock servers lack or answer
badly:

- request line and headers over ``MAX_HEADER_BYTES`` (16 KiB): 431 and the connection
  closed, whether the head is unfinished or arrives whole at once (httptools has no cap
  of its own: it buffers an unfinished head however long), so the head's bytes are
  counted here as they arrive;
- a request (head and body) not complete within ``SESSIONGATE_REQUEST_READ_TIMEOUT``
  seconds: 408 if the head is still incomplete, else the connection is closed and the
  app sees a disconnect (slow-header and slow-body clients cannot pin connections);
- more than ``SESSIONGATE_MAX_CONNECTIONS`` open connections: the new one gets 503
  (with ``Retry-After``) at once and is closed, without reading anything.

Why httptools and not h11: h11 is pure Python and costs ~1.5 ms more CPU per streamed
turn (``bench/README.md``). The server was on h11 for a while because of rare cut
responses at 128 users in ``bench/turns.py``; they were the benchmark client reusing a
pooled connection at the moment the server's 5-s keep-alive timeout closed it (both
sides timed idle connections out after 5 s), on either server and on the direct side
too, and are gone since the client drops idle connections after 2 s.

Refusals carry the usual ``{"error": {"code", "message"}}`` envelope. Body size is a
per-route rule and lives in the app (``api.middleware.body_limit``).
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from .config import Settings

log = logging.getLogger(__name__)

MAX_HEADER_BYTES = 16 * 1024
_REASONS = {
    408: "Request Timeout",
    431: "Request Header Fields Too Large",
    503: "Service Unavailable",
}


def _raw_error(status: int, code: str, message: str, *, retry_after: int | None = None) -> bytes:
    """A complete HTTP/1.1 error response that closes the connection, as bytes."""
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    head = [
        f"HTTP/1.1 {status} {_REASONS[status]}",
        "content-type: application/json",
        f"content-length: {len(body)}",
        "connection: close",
    ]
    if retry_after is not None:
        head.append(f"retry-after: {retry_after}")
    return ("\r\n".join(head) + "\r\n\r\n").encode("ascii") + body


class EdgeHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol plus a request read deadline, a connection cap and 431s.

    ``read_timeout`` is seconds for one whole request to arrive; ``max_connections``
    counts this server's open connections (per process).
    """

    def __init__(
        self, *args: Any, read_timeout: float = 10.0, max_connections: int = 1000, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self._read_timeout = read_timeout
        self._max_connections = max_connections
        self._read_deadline: asyncio.TimerHandle | None = None
        self._receiving = False  # a request has begun and is not whole yet
        self._head_done = False  # its request line and headers are complete
        self._head_bytes = 0  # bytes of its head received so far
        self._head_tail = b""  # the head's last 3 bytes (its end may straddle two reads)

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self._max_connections:
            # Refuse before reading: a flood of idle connections must not cost a parse.
            log.warning("refused a connection: %d open", len(self.connections) - 1)
            self._refuse(
                503,
                "too_many_connections",
                "The server has too many open connections; try again shortly.",
                retry_after=1,
            )
            return
        self._receiving = True  # the first request's time starts at the connection
        self._arm_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_deadline()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if not self._receiving:  # the first bytes of the next request on this connection
            self._receiving = True
            self._arm_deadline()
        if not self._head_done and self._head_too_large(data):
            return
        super().data_received(data)

    def _head_too_large(self, data: bytes) -> bool:
        """Refuse (431) a head that grows past the cap, finished in ``data`` or not:
        httptools buffers an unfinished head however long and parses a whole one of any
        size."""
        seen = self._head_tail + data
        end = seen.find(b"\r\n\r\n")
        size = self._head_bytes + (len(data) if end == -1 else end + 4 - len(self._head_tail))
        self._head_bytes, self._head_tail = size, seen[-3:]
        if size <= MAX_HEADER_BYTES:
            return False
        self._refuse(
            431,
            "headers_too_large",
            f"The request line and headers exceed {MAX_HEADER_BYTES} bytes.",
        )
        return True

    def on_headers_complete(self) -> None:
        self._head_done = True
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        # The request is whole: the app's response time is not the client's to limit.
        self._disarm_deadline()
        self._receiving = self._head_done = False
        self._head_bytes, self._head_tail = 0, b""
        super().on_message_complete()

    # ------------------------------------------------------------------ the deadline

    def _arm_deadline(self) -> None:
        if self._read_deadline is None:
            self._read_deadline = self.loop.call_later(self._read_timeout, self._read_timed_out)

    def _disarm_deadline(self) -> None:
        if self._read_deadline is not None:
            self._read_deadline.cancel()
            self._read_deadline = None

    def _read_timed_out(self) -> None:
        self._read_deadline = None
        if self.transport.is_closing():
            return
        if not self._head_done:
            self._refuse(
                408,
                "request_timeout",
                f"The request was not received within {self._read_timeout:g} seconds.",
            )
        else:
            # The app is reading the body; closing makes its receive() report a disconnect.
            self.transport.close()

    def _refuse(
        self, status: int, code: str, message: str, *, retry_after: int | None = None
    ) -> None:
        self._disarm_deadline()
        self.transport.write(_raw_error(status, code, message, retry_after=retry_after))
        self.transport.close()


def server_options(settings: Settings) -> dict[str, Any]:
    """uvicorn keyword arguments that apply the edge limits of ``settings``.

    ``proxy_headers`` is off: the app decides itself when ``X-Forwarded-For`` is
    believed (``SESSIONGATE_TRUSTED_PROXIES``), instead of uvicorn trusting loopback.
    """
    return {
        "http": functools.partial(
            EdgeHttpToolsProtocol,
            read_timeout=settings.request_read_timeout,
            max_connections=settings.max_connections,
        ),
        "timeout_keep_alive": 5,
        "proxy_headers": False,
    }


__all__ = ["MAX_HEADER_BYTES", "EdgeHttpToolsProtocol", "server_options"]
