"""The HTTP server's edge limits: what uvicorn must refuse before the app sees a request.

``server_options(settings)`` returns the keyword arguments that ``sessiongate serve``
(and the tests' loopback servers) pass to uvicorn. They select ``EdgeH11Protocol``, the
h11 protocol with three limits the stock servers lack or answer badly:

- request line and headers over ``MAX_HEADER_BYTES`` (16 KiB): 431 and the connection
  closed, whether the head is unfinished (h11 keeps the partial head in memory;
  httptools has no cap at all) or arrives whole at once;
- a request (head and body) not complete within ``SESSIONGATE_REQUEST_READ_TIMEOUT``
  seconds: 408 if the head is still incomplete, else the connection is closed and the
  app sees a disconnect (slow-header and slow-body clients cannot pin connections);
- more than ``SESSIONGATE_MAX_CONNECTIONS`` open connections: the new one gets 503
  (with ``Retry-After``) at once and is closed, without reading anything.

Why h11 and not httptools, though h11 is pure Python and costs ~1.5 ms of CPU per
streamed turn more (``bench/README.md``): under ``bench/turns.py`` at 128 users on
PostgreSQL, the client saw 1–3 of ~1,500 streamed responses cut (a bare ``ReadError``;
the gateway logged nothing) in 4 of 5 runs on httptools with these same limits, and in
1 of 5 runs on h11 (a sixth h11 run had one on the direct side instead, where the
gateway is not involved: likely the overloaded benchmark client). The cause is not
found; until it is, the server that cut less.

Refusals carry the usual ``{"error": {"code", "message"}}`` envelope. Body size is a
per-route rule and lives in the app (``api.middleware.body_limit``).
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import sys
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

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


class EdgeH11Protocol(H11Protocol):
    """uvicorn's h11 protocol plus a request read deadline, a connection cap and 431s.

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
        self._head_bytes = 0  # bytes of the request head being received
        self._head_tail = b""  # its last 3 bytes (its end may straddle two reads)

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
        self._arm_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_deadline()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.conn.their_state is h11.IDLE and self._head_too_large(data):
            return
        super().data_received(data)
        self._track_request()
        if self.conn.their_state is not h11.IDLE:
            self._head_bytes, self._head_tail = 0, b""

    def _head_too_large(self, data: bytes) -> bool:
        """Refuse (431) a head over the cap that ends in ``data``. h11 itself refuses an
        unfinished one (``h11_max_incomplete_event_size``), but parses a whole head that
        arrives at once whatever its size."""
        seen = self._head_tail + data
        end = seen.find(b"\r\n\r\n")
        size = self._head_bytes + (len(data) if end == -1 else end + 4 - len(self._head_tail))
        self._head_bytes, self._head_tail = size, seen[-3:]
        if end == -1 or size <= MAX_HEADER_BYTES:
            return False
        self._refuse(
            431,
            "headers_too_large",
            f"The request line and headers exceed {MAX_HEADER_BYTES} bytes.",
        )
        return True

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._track_request()

    def send_400_response(self, msg: str) -> None:
        # Called from handle_events' `except h11.RemoteProtocolError`; h11 hints 431
        # when the unfinished head outgrew h11_max_incomplete_event_size.
        error = sys.exc_info()[1]
        if isinstance(error, h11.RemoteProtocolError) and error.error_status_hint == 431:
            self._refuse(
                431,
                "headers_too_large",
                f"The request line and headers exceed {MAX_HEADER_BYTES} bytes.",
            )
            return
        super().send_400_response(msg)

    # ------------------------------------------------------------------ the deadline

    def _track_request(self) -> None:
        """Arm the deadline while a request is partly received; disarm once it is whole."""
        if self.transport is None or self.transport.is_closing():
            return
        state = self.conn.their_state
        if state in (h11.DONE, h11.MUST_CLOSE, h11.CLOSED, h11.ERROR):
            self._disarm_deadline()
        elif state is h11.SEND_BODY or self.conn.trailing_data[0]:
            self._arm_deadline()
        # IDLE with nothing received: the keep-alive timeout governs the idle connection.

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
        if self.conn.their_state is h11.IDLE:
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
            EdgeH11Protocol,
            read_timeout=settings.request_read_timeout,
            max_connections=settings.max_connections,
        ),
        "h11_max_incomplete_event_size": MAX_HEADER_BYTES,
        "timeout_keep_alive": 5,
        "proxy_headers": False,
    }


__all__ = ["MAX_HEADER_BYTES", "EdgeH11Protocol", "server_options"]
