"""Coze access tokens: one per ``session_name``, from an OAuth JWT exchange, cached.

Coze isolates end users only through OAuth JWT with a ``session_name`` claim (Coze
OAuth "JWT authorization" guide; ``COZE_PROTOCOL.md``). ``CozeTokenManager`` signs such a
JWT per session, exchanges it, caches the token until ``refresh_margin`` seconds before
its expiry, and makes sure concurrent turns of one session cause exactly one exchange.

Why not cozepy's ``AsyncJWTOAuthApp``: it stamps ``iat``/``exp`` from ``time.time()``
(no injectable clock, so refresh timing cannot be tested against a controlled clock),
sends every exchange through its own ``httpx`` client with a 600-second timeout that
cannot be replaced through its public API, and reports Coze's OAuth errors as a
``CozeAPIError`` carrying Coze's free text. Signing the JWT with PyJWT and posting it
with ``httpx`` is a dozen lines and gives us the clock, the timeouts and the transport.
The wire format is exactly cozepy's and Coze's documented one.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from functools import partial
from typing import Any, Protocol, runtime_checkable

import httpx
import jwt
import stamina
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
from pydantic import SecretStr

from .. import metrics
from ..errors import ConfigurationError, UpstreamError, UpstreamTimeout, UpstreamUnavailable
from ..providers.transport import transport_error
from .cache import AccessToken, Clock, MemoryTokenCache, TokenCache
from .errors import oauth_refusal, parse_retry_after, with_logid
from .settings import MAX_TOKEN_TTL, CozeSettings

log = logging.getLogger(__name__)

#: Coze OAuth JWT grant type (RFC 7523), sent as ``grant_type``.
JWT_BEARER_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
#: Coze OAuth: token endpoint path, relative to ``COZE_API_BASE``.
TOKEN_PATH = "/api/permission/oauth2/token"
#: Lifetime of the signed JWT itself (seconds). It is single-use (``jti``) and spent at
#: once; an hour, as cozepy uses, tolerates clock skew between this host and Coze.
JWT_LIFETIME = 3600
#: Values of ``expires_in`` below this are durations, not unix times (before 2001). Coze
#: documents an absolute time; a proxy or an older deployment answering with a duration
#: would otherwise make every token look expired and cause an exchange per turn.
_ABSOLUTE_TIME_FLOOR = 1_000_000_000


@runtime_checkable
class TokenSource(Protocol):
    """Gives a provider the Coze access token to use for one session's request.

    ``refreshable``: whether ``invalidate`` followed by ``access_token`` can yield a new
    token (OAuth JWT) or always the same one (a personal access token).
    """

    refreshable: bool

    async def access_token(self, session_name: str) -> str:
        """The token to send for ``session_name``; raises ``UpstreamError`` subclasses."""
        ...

    async def invalidate(self, session_name: str, access_token: str) -> None:
        """Coze said ``access_token`` is invalid: stop using it for ``session_name``."""
        ...

    async def aclose(self) -> None:
        """Release the HTTP client and any pending exchange."""
        ...


class StaticTokenSource:
    """``COZE_AUTH_MODE=PAT``: the same personal access token for every session.

    Coze cannot tell users apart by this token, so providers force gateway history.
    """

    refreshable = False

    def __init__(self, token: SecretStr) -> None:
        self._token = token

    def __repr__(self) -> str:
        return "StaticTokenSource(token=**********)"

    async def access_token(self, session_name: str) -> str:
        return self._token.get_secret_value()

    async def invalidate(self, session_name: str, access_token: str) -> None:
        # Nothing to refresh: the provider reports COZE_API_TOKEN as the setting to fix.
        return None

    async def aclose(self) -> None:
        return None


class _Transient(Exception):
    """An exchange attempt failed in a way worth retrying; carries the error to raise."""

    def __init__(self, error: UpstreamError) -> None:
        super().__init__(error.message)
        self.error = error


class CozeTokenManager:
    """Per-``session_name`` Coze access tokens from OAuth JWT exchanges.

    ``ttl``: seconds each token is asked to live (``duration_seconds``, at most 86399).
    ``refresh_margin``: a cached token is replaced once ``clock()`` reaches
    ``expires_at - refresh_margin``, i.e. before Coze would reject it. ``clock``: unix
    time in seconds (injected so tests control it; also stamps ``iat``/``exp``).
    ``http_client``: a shared client (not closed by ``aclose``); ``connect_timeout`` and
    ``timeout`` (seconds) apply per request either way. ``max_attempts``/``backoff``:
    transient failures (timeouts, connection errors, 5xx, 429) are tried up to
    ``max_attempts`` times in total, with exponential backoff starting at ``backoff``
    seconds, capped at ``max_backoff``, with jitter. A 4xx is not retried: it raises
    ``CozeAuthError`` naming the settings to check and Coze's
    log id. The private key and the tokens never appear in logs, errors or reprs.

    Single-flight: concurrent callers for one ``session_name`` share one exchange (a
    task per session_name, awaited through ``asyncio.shield`` so one caller's
    cancellation does not cancel the others'); different session_names never wait for
    each other. With a shared ``cache`` (``RedisTokenCache``) the exchange is also
    single-flight across every process that shares it.
    """

    refreshable = True

    def __init__(
        self,
        *,
        api_base: str,
        client_id: str,
        public_key_id: str,
        private_key: RSAPrivateKey,
        ttl: int = 3600,
        refresh_margin: float = 300,
        http_client: httpx.AsyncClient | None = None,
        connect_timeout: float = 10.0,
        timeout: float = 10.0,
        clock: Clock = time.time,
        cache: TokenCache | None = None,
        max_attempts: int = 3,
        backoff: float = 0.5,
        max_backoff: float = 4.0,
    ) -> None:
        if not 0 < ttl <= MAX_TOKEN_TTL:
            raise ValueError(f"ttl must be in 1..{MAX_TOKEN_TTL} seconds")
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        self._base = api_base.rstrip("/")
        self._audience = httpx.URL(self._base).netloc.decode("ascii")
        self._client_id = client_id
        self._public_key_id = public_key_id
        self._private_key = private_key
        self._ttl = ttl
        self._margin = refresh_margin
        self._clock = clock
        self._cache: TokenCache = cache if cache is not None else MemoryTokenCache(clock=clock)
        self._max_attempts = max_attempts
        self._backoff = backoff
        self._max_backoff = max_backoff
        # Sent with every request, so a shared client's own defaults do not apply.
        self._timeout = httpx.Timeout(timeout, connect=connect_timeout)
        self._owns_http = http_client is None
        self._http = http_client or httpx.AsyncClient(timeout=self._timeout)
        self._inflight: dict[str, asyncio.Task[AccessToken]] = {}
        #: Exchange attempts made so far (successful or not), for metrics and benchmarks.
        self.exchange_count = 0

    @classmethod
    def from_settings(
        cls, settings: CozeSettings, *, clock: Clock = time.time, **kwargs: Any
    ) -> CozeTokenManager:
        """Build from ``CozeSettings`` (``COZE_OAUTH_*``, ``SESSIONGATE_COZE_TOKEN_*``).

        Raises ``ConfigurationError`` when a needed setting is missing or the key is bad.
        ``kwargs`` go to the constructor (``http_client``, timeouts, retry tuning).
        """
        if not settings.oauth_client_id or not settings.oauth_public_key_id:
            raise ConfigurationError(
                "COZE_OAUTH_CLIENT_ID and COZE_OAUTH_PUBLIC_KEY_ID are required for OAuth JWT."
            )
        return cls(
            api_base=settings.api_base_url,
            client_id=settings.oauth_client_id,
            public_key_id=settings.oauth_public_key_id,
            private_key=settings.load_private_key(),
            ttl=settings.token_ttl,
            refresh_margin=settings.token_refresh_margin,
            clock=clock,
            **kwargs,
        )

    def __repr__(self) -> str:
        return (
            f"CozeTokenManager(api_base={self._base!r}, client_id={self._client_id!r}, "
            f"ttl={self._ttl}, refresh_margin={self._margin})"
        )

    # -- public API ------------------------------------------------------------------

    async def access_token(self, session_name: str) -> str:
        """The access token for ``session_name``: cached, or exchanged now.

        Raises ``CozeAuthError`` (Coze refused the JWT: configuration), ``UpstreamTimeout``
        or ``UpstreamUnavailable`` (after the bounded retries).
        """
        return (await self.get_token(session_name)).value

    async def issue_token(self, session_name: str) -> tuple[str, int]:
        """``(access_token, expires_at)`` for ``session_name``; ``expires_at`` is unix seconds.

        For front ends that embed Coze's Chat SDK (``POST /api/coze/token``). Shares the
        cache and single-flight of ``access_token``. Same errors.
        """
        token = await self.get_token(session_name)
        return token.value, int(token.expires_at)

    async def get_token(self, session_name: str) -> AccessToken:
        """The cached-or-new ``AccessToken`` for ``session_name`` (see ``access_token``)."""
        if not session_name:
            raise ValueError("session_name must be a non-empty string")
        task = self._inflight.get(session_name)
        if task is None:
            cached = await self._cache.get(session_name)
            if cached is not None and self._is_fresh(cached):
                metrics.TOKEN_CACHE.labels(result="hit").inc()  # observability
                return cached
            # Another caller may have started the exchange while the cache was read.
            task = self._inflight.get(session_name)
            if task is None:
                task = asyncio.get_running_loop().create_task(
                    self._refresh(session_name), name=f"coze-token-exchange:{session_name}"
                )
                self._inflight[session_name] = task
                task.add_done_callback(partial(self._forget, session_name))
        metrics.TOKEN_CACHE.labels(result="miss").inc()  # observability
        return await asyncio.shield(task)

    async def invalidate(self, session_name: str, access_token: str | None = None) -> None:
        """Drop the cached token of ``session_name`` (Coze answered 4100 "token invalid").

        With ``access_token``, only that token is dropped: when many turns fail with the
        same stale token at once, the first one's fresh replacement survives the others'
        invalidations.
        """
        await self._cache.discard(session_name, access_token)

    async def aclose(self) -> None:
        """Cancel pending exchanges and close the HTTP client this manager created."""
        pending = list(self._inflight.values())
        for task in pending:
            task.cancel()
        # Await them: a cancelled exchange still holds an HTTP response until it unwinds.
        await asyncio.gather(*pending, return_exceptions=True)
        self._inflight.clear()
        if self._owns_http:
            await self._http.aclose()

    # -- internals -------------------------------------------------------------------

    def _is_fresh(self, token: AccessToken) -> bool:
        return self._clock() < token.expires_at - self._margin

    def _forget(self, session_name: str, task: asyncio.Task[AccessToken]) -> None:
        if self._inflight.get(session_name) is task:
            del self._inflight[session_name]
        # Mark a failure as retrieved even when every waiter was cancelled.
        if not task.cancelled():
            task.exception()

    async def _refresh(self, session_name: str) -> AccessToken:
        cached = await self._cache.get(session_name)
        if cached is not None and self._is_fresh(cached):
            return cached
        # A shared cache makes the exchange single-flight across processes too: whoever
        # waited for another replica's exchange finds its token in the cache.
        async with self._cache.exchange_lock(session_name):
            cached = await self._cache.get(session_name)
            if cached is not None and self._is_fresh(cached):
                return cached
            return await self._exchange_and_store(session_name, cached)

    async def _exchange_and_store(
        self, session_name: str, cached: AccessToken | None
    ) -> AccessToken:
        try:
            token = await self._exchange_with_retries(session_name)
        except (UpstreamTimeout, UpstreamUnavailable):
            # The refresh is early by design: a token inside its margin still works, so
            # an outage of the token endpoint need not fail the turn yet.
            if cached is not None and self._clock() < cached.expires_at:
                log.warning(
                    "Coze token refresh for session_name=%s failed; using the current "
                    "token until it expires in %.0fs",
                    session_name,
                    cached.expires_at - self._clock(),
                )
                return cached
            raise
        await self._cache.put(session_name, token)
        return token

    async def _exchange_with_retries(self, session_name: str) -> AccessToken:
        # stamina: exponential backoff from `backoff`, capped at `max_backoff`, plus up to
        # half the first wait of jitter so synchronized sessions spread out.
        retries = stamina.retry_context(
            on=_Transient,
            attempts=self._max_attempts,
            timeout=None,
            wait_initial=self._backoff,
            wait_max=self._max_backoff,
            wait_jitter=self._backoff / 2,
        )
        try:
            async for attempt in retries:
                with attempt:
                    return await self._counted_exchange(session_name)
        except _Transient as exc:
            raise exc.error from None
        raise AssertionError("unreachable")  # pragma: no cover

    async def _counted_exchange(self, session_name: str) -> AccessToken:
        """``_exchange``, counted in ``sessiongate_coze_token_exchanges_total`` (observability)."""
        try:
            token = await self._exchange(session_name)
        except _Transient:
            metrics.TOKEN_EXCHANGES.labels(outcome="error").inc()
            raise
        except UpstreamError:
            metrics.TOKEN_EXCHANGES.labels(outcome="refused").inc()
            raise
        metrics.TOKEN_EXCHANGES.labels(outcome="ok").inc()
        return token

    def _sign_jwt(self, session_name: str) -> str:
        """A single-use RS256 JWT for ``session_name`` (Coze OAuth JWT: header and claims)."""
        now = int(self._clock())
        payload = {
            "iss": self._client_id,
            "aud": self._audience,
            "iat": now,
            "exp": now + JWT_LIFETIME,
            # Coze refuses a reused jti; 128 random bits make a collision impossible.
            "jti": secrets.token_hex(16),
            "session_name": session_name,
        }
        headers = {"alg": "RS256", "typ": "JWT", "kid": self._public_key_id}
        return jwt.encode(payload, self._private_key, algorithm="RS256", headers=headers)

    async def _exchange(self, session_name: str) -> AccessToken:
        """One exchange. Raises ``_Transient`` (retry) or ``CozeAuthError`` (don't)."""
        self.exchange_count += 1
        # A fresh JWT per attempt: a timed-out attempt may already have spent its jti.
        assertion = self._sign_jwt(session_name)
        try:
            response = await self._http.post(
                f"{self._base}{TOKEN_PATH}",
                json={"grant_type": JWT_BEARER_GRANT, "duration_seconds": self._ttl},
                headers={"Authorization": f"Bearer {assertion}"},
                timeout=self._timeout,
            )
        except httpx.TransportError as exc:
            raise _Transient(
                transport_error(
                    exc, upstream="Coze", started=False, where=f"COZE_API_BASE={self._base}"
                )
            ) from None
        logid = response.headers.get("x-tt-logid")
        if response.status_code >= 500 or response.status_code == 429:
            limited = response.status_code == 429
            raise _Transient(
                UpstreamUnavailable(
                    with_logid("Coze is not available right now.", logid),
                    detail=f"Coze's OAuth token endpoint answered HTTP {response.status_code}.",
                    code="rate_limited" if limited else None,
                    status=429 if limited else None,
                    retry_after=parse_retry_after(response.headers.get("retry-after")),
                    upstream_code=response.status_code,
                    logid=logid,
                )
            )
        body = _json_object(response)
        token = body.get("access_token")
        expires_in = body.get("expires_in")
        if (
            response.status_code >= 400
            or body.get("error_code")
            or not isinstance(token, str)
            or not token
            or not isinstance(expires_in, int | float)
        ):
            raise oauth_refusal(response.status_code, body, logid)
        expires_at = float(expires_in)
        if expires_at < _ABSOLUTE_TIME_FLOOR:
            expires_at += self._clock()
        log.debug(
            "Coze access token issued for session_name=%s, expires at %d (logid %s)",
            session_name,
            expires_at,
            logid,
        )
        return AccessToken(value=token, expires_at=expires_at)


def _json_object(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


__all__ = [
    "AccessToken",
    "CozeTokenManager",
    "JWT_BEARER_GRANT",
    "MemoryTokenCache",
    "StaticTokenSource",
    "TOKEN_PATH",
    "TokenCache",
    "TokenSource",
]
