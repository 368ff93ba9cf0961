"""The HTTP client of Coze workflow chat streams: ``aiohttp``.

Why not ``httpx`` (which cozepy, bot chat and the token exchange use): measured on the
workflow stream (``bench/upstream_clients.py``, 15 SSE events per turn), httpx costs
3–12 ms of CPU per streamed turn and aiohttp 0.5–0.6 ms; httpx's pool also scans every
idle connection on each request. The workflow stream is the one Coze call on every
turn, so it alone moves to aiohttp; the rest stays on httpx.

``StreamPool`` is one aiohttp session (a connection pool of ``limit`` connections,
created on first use inside the running event loop, honouring ``HTTP(S)_PROXY`` and
``NO_PROXY`` like httpx); its bytes are parsed by ``stream.SseParser``.

The proxy is looked up once per upstream URL, not per request: aiohttp's
``trust_env=True`` reads the environment (and ``~/.netrc``) in a worker thread on every
request, which cost more CPU per turn than the rest of the request.
"""

from __future__ import annotations

import ssl

import aiohttp
from aiohttp.helpers import get_env_proxy_for_url
from yarl import URL


class StreamPool:
    """One aiohttp connection pool for streamed upstream requests.

    ``limit``: connections at most (others wait, within the request's connect timeout).
    ``ssl_context``: the CA bundle shared with the httpx clients.
    """

    def __init__(self, *, limit: int, ssl_context: ssl.SSLContext) -> None:
        self._limit = limit
        self._ssl = ssl_context
        self._session: aiohttp.ClientSession | None = None
        self._proxies: dict[str, tuple[URL | None, aiohttp.BasicAuth | None]] = {}

    def session(self) -> aiohttp.ClientSession:
        """The pool's session, created on first use (it must be made inside the loop)."""
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(limit=self._limit, ssl=self._ssl)
            self._session = aiohttp.ClientSession(
                connector=connector, trust_env=False, raise_for_status=False
            )
        return self._session

    def proxy_for(self, url: str) -> tuple[URL | None, aiohttp.BasicAuth | None]:
        """The proxy (and its credentials) for requests to ``url`` from ``HTTP(S)_PROXY``
        / ``NO_PROXY`` (and ``~/.netrc``, as aiohttp's ``trust_env``), read on the first
        call for ``url`` and kept: pass them as ``proxy=``/``proxy_auth=``."""
        found = self._proxies.get(url)
        if found is None:
            try:
                proxy, auth = get_env_proxy_for_url(URL(url))
            except LookupError:  # no proxy for this URL
                proxy, auth = None, None
            found = self._proxies[url] = (proxy, auth)
        return found

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def timeouts(*, connect: float) -> aiohttp.ClientTimeout:
    """``connect``: seconds to get a connection (pool wait included). No read timeout
    (the caller times silences with one ``tasks.Watchdog`` for the whole stream; aiohttp
    re-arms its own on every chunk) and no whole-request limit (the turn has its own
    deadline)."""
    return aiohttp.ClientTimeout(total=None, connect=connect, sock_connect=connect)


__all__ = ["StreamPool", "timeouts"]
