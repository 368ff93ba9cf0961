"""The HTTP server's edge limits: what uvicorn must refuse before the app sees a request.

``server_options(settings)`` returns the keyword arguments that ``sessiongate serve``
(and the tests' loopback servers) pass to uvicorn. They select ``EdgeHttpToolsProtocol``,
uvicorn's httptools (llhttp) protocol with three limits the stock servers lack or answer
badly:

- request line and headers over ``MAX_HEADER_BYTES`` (16 KiB): 431 and the connection
  closed, whether the head is unfinished, arrives whole at once or is pipelined behind
  another request (httptools has no cap of its own: it buffers an unfinished head
  however long);
- a request (head and body) not complete within ``SESSIONGATE_REQUEST_READ_TIMEOUT``
  seconds: 408 if the head is still incomplete, else the connection is closed and the
  app sees a disconnect (slow-header and slow-body clients cannot pin connections); the
  clock stops while the server itself is not reading;
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
    400: "Bad Request",
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

    A head is measured two ways: by its raw bytes, read by read, from the first read
    that begins inside it (before it is parsed); and, once llhttp reports it complete,
    from its parsed parts (so a pipelined head that begins in the middle of a read, after
    the request before it, is measured too). Such a pipelined head can so buffer at most
    that one read (uvloop reads up to 256 KiB) plus the cap before its 431, and the
    parsed parts leave out whitespace llhttp strips around header values.

    A refusal (400 for a request that is not HTTP, 408, 431) is never written into
    another response: while an earlier request on the connection is still being
    answered, it waits until that answer (and any pipelined one before it) is complete,
    and nothing more is parsed meanwhile. The read deadline runs only for the request
    being served and while the server reads: it restarts when a pipelined request's turn
    comes, and a deadline that falls while reading is paused is pushed out.
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
        self._head_bytes = 0  # raw bytes of the unfinished head counted so far
        self._head_tail = b""  # its last 3 bytes (its end may straddle two reads)
        self._refusal: bytes | None = None  # a refusal waiting for an earlier response
        self._refused = False  # a refusal is sent or waiting: parse nothing more

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
        if self._refused:
            return
        if not self._receiving:  # the first bytes of the next request on this connection
            self._receiving = True
            self._arm_deadline()
        if not self._head_done:
            # This read begins inside a head (or before one): count it up to the head's
            # end, before parsing (httptools buffers an unfinished head however long).
            seen = self._head_tail + data
            end = seen.find(b"\r\n\r\n")
            size = self._head_bytes + (len(data) if end == -1 else end + 4 - len(self._head_tail))
            if size > MAX_HEADER_BYTES:
                self._refuse_head()
                return
            self._head_bytes, self._head_tail = size, seen[-3:]
        super().data_received(data)

    def _refuse_head(self) -> None:
        self._refuse(
            431,
            "headers_too_large",
            f"The request line and headers exceed {MAX_HEADER_BYTES} bytes.",
        )

    def _finished_head_size(self) -> int:
        """Bytes of the head just parsed: request line, headers and the blank line."""
        line = len(self.parser.get_method()) + len(self.url) + len(" HTTP/1.1\r\n") + 1
        return line + sum(len(name) + len(value) + 4 for name, value in self.headers) + 2

    # ------------------------------------------------- parser callbacks (httptools)

    def on_message_begin(self) -> None:
        if self._refused:
            return
        self._receiving = True  # a pipelined request's time starts at its first byte
        self._arm_deadline()
        super().on_message_begin()

    def on_url(self, url: bytes) -> None:
        if not self._refused:
            super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        if not self._refused:
            super().on_header(name, value)

    def on_headers_complete(self) -> None:
        if self._refused:
            return
        self._head_done = True
        self._head_bytes, self._head_tail = 0, b""
        if self._finished_head_size() > MAX_HEADER_BYTES:
            self._refuse_head()
            return
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if not self._refused:
            super().on_body(body)

    def on_message_complete(self) -> None:
        if self._refused:
            return
        # The request is whole: the app's response time is not the client's to limit.
        self._disarm_deadline()
        self._receiving = self._head_done = False
        super().on_message_complete()

    def on_response_complete(self) -> None:
        if self._refusal is not None and not self.pipeline:
            # Every request before the refused one is answered: the refusal goes out now.
            self.server_state.total_requests += 1
            if not self.transport.is_closing():
                self.transport.write(self._refusal)
                self.transport.close()
            return
        waiting = bool(self.pipeline)
        super().on_response_complete()
        if waiting and self._receiving and self._read_deadline is not None:
            # A pipelined request's turn has come: its time to arrive starts now.
            self._disarm_deadline()
            self._arm_deadline()

    def send_400_response(self, msg: str) -> None:
        """llhttp refused the bytes as HTTP: 400 in the envelope, in its turn."""
        if not self._refused:  # a refused connection has its answer already
            self._refuse(400, "bad_request", "The request is not valid HTTP/1.1.")

    def _should_upgrade(self) -> bool:
        # A refused head (e.g. a 431 for an oversized WebSocket handshake) is no upgrade.
        return not self._refused and super()._should_upgrade()

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
        if self.flow.read_paused or (self._head_done and self.pipeline):
            # The server stopped reading (the app has not taken the body yet), or this
            # request waits for the answers before it: the client is not late.
            self._arm_deadline()
        elif not self._head_done:
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
        """Answer ``status`` and close; after the answers still owed, if any."""
        self._refused = True
        self._disarm_deadline()
        response = _raw_error(status, code, message, retry_after=retry_after)
        if self.cycle is None or (self.cycle.response_complete and not self.pipeline):
            self.transport.write(response)
            self.transport.close()
        else:
            self._refusal = response
            self.flow.pause_reading()


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
