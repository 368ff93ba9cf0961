"""The HTTP client of Coze workflow chat streams: ``aiohttp``.

Why not ``httpx`` (which cozepy, bot chat and the token exchange use): measured on the
workflow stream (``bench/upstream_clients.py``, 15 SSE events per turn), httpx costs
3–12 ms of CPU per streamed turn and aiohttp 0.5–0.6 ms; httpx's pool also scans every
idle connection on each request. The workflow stream is the one Coze call on every
turn, so it alone moves to aiohttp; the rest stays on httpx.

``StreamPool`` is one aiohttp session (a connection pool of ``limit`` connections,
created on first use inside the running event loop, honouring ``HTTP(S)_PROXY`` like
httpx). ``iter_lines`` splits a byte stream into text lines with a cap on a line's
length, so an upstream that never ends a line cannot fill the memory.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncGenerator, AsyncIterator

import aiohttp

from ..errors import UpstreamError

#: Longest SSE line accepted (bytes). A Coze event is one ``data:`` line; the longest
#: real one repeats a whole reply (``conversation.message.completed``).
MAX_LINE_BYTES = 4 * 1024 * 1024


class StreamPool:
    """One aiohttp connection pool for streamed upstream requests.

    ``limit``: connections at most (others wait, within the request's connect timeout).
    ``ssl_context``: the CA bundle shared with the httpx clients.
    """

    def __init__(self, *, limit: int, ssl_context: ssl.SSLContext) -> None:
        self._limit = limit
        self._ssl = ssl_context
        self._session: aiohttp.ClientSession | None = None

    def session(self) -> aiohttp.ClientSession:
        """The pool's session, created on first use (it must be made inside the loop)."""
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(limit=self._limit, ssl=self._ssl)
            self._session = aiohttp.ClientSession(
                connector=connector, trust_env=True, raise_for_status=False
            )
        return self._session

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def timeouts(*, connect: float, idle: float) -> aiohttp.ClientTimeout:
    """``connect``: seconds to get a connection (pool wait included); ``idle``: seconds
    of silence allowed between two reads of the answer. No whole-request limit (the
    turn has its own deadline)."""
    return aiohttp.ClientTimeout(total=None, connect=connect, sock_connect=connect, sock_read=idle)


async def iter_lines(
    chunks: AsyncIterator[bytes], *, max_line: int = MAX_LINE_BYTES
) -> AsyncGenerator[str, None]:
    """Text lines (UTF-8, undecodable bytes replaced) of ``chunks``, without their LF or
    CRLF ending; the last line is yielded even without an ending.

    Raises ``UpstreamError`` when a line grows past ``max_line`` bytes.
    """
    pending = b""
    async for chunk in chunks:
        data = pending + chunk if pending else chunk
        start = 0
        while (end := data.find(b"\n", start)) != -1:
            yield data[start:end].rstrip(b"\r").decode("utf-8", "replace")
            start = end + 1
        pending = data[start:]
        if len(pending) > max_line:
            raise UpstreamError(
                "The upstream sent a malformed stream (a line too long).",
                detail=f"an SSE line grew past {max_line} bytes without an end",
            )
    if pending:
        yield pending.rstrip(b"\r").decode("utf-8", "replace")


__all__ = ["MAX_LINE_BYTES", "StreamPool", "iter_lines", "timeouts"]
