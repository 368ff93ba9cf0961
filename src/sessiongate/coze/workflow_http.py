"""The HTTP client of Coze workflow chat streams: ``aiohttp``.

Why not ``httpx`` (which cozepy, bot chat and the token exchange use): measured on the
workflow stream (``bench/upstream_clients.py``, 15 SSE events per turn), httpx costs
3–12 ms of CPU per streamed turn and aiohttp 0.5–0.6 ms; httpx's pool also scans every
idle connection on each request. The workflow stream is the one Coze call on every
turn, so it alone moves to aiohttp; the rest stays on httpx.

``StreamPool`` is one aiohttp session (a connection pool of ``limit`` connections,
created on first use inside the running event loop, honouring ``HTTP(S)_PROXY`` like
httpx); its bytes are parsed by ``stream.SseParser``.
"""

from __future__ import annotations

import ssl

import aiohttp


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


__all__ = ["StreamPool", "timeouts"]
