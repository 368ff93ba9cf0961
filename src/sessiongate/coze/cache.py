"""Where Coze access tokens are kept between turns, keyed by ``session_name``.

``TokenCache`` is the small interface the token manager needs; ``MemoryTokenCache``
keeps tokens in this process; ``RedisTokenCache`` shares them with every replica,
encrypted at rest, and makes the exchange single-flight across the fleet: one token
exchange per ``session_name`` however many processes ask at once.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from redis.asyncio import Redis

from ..store.models import new_id

log = logging.getLogger(__name__)

Clock = Callable[[], float]


@dataclass(frozen=True, slots=True)
class AccessToken:
    """A Coze access token and its expiry (``expires_at``: unix time, seconds).

    The token value is excluded from ``repr`` so that it cannot reach a log by accident.
    """

    value: str = field(repr=False)
    expires_at: float


@runtime_checkable
class TokenCache(Protocol):
    """Where access tokens are kept between turns, keyed by ``session_name``.

    In-process today (``MemoryTokenCache``); a shared cache (e.g. Redis) for several
    replicas implements the same three calls.
    """

    async def get(self, session_name: str) -> AccessToken | None:
        """The cached token for ``session_name``, or None."""
        ...

    async def put(self, session_name: str, token: AccessToken) -> None:
        """Remember ``token`` for ``session_name``, replacing any previous one."""
        ...

    async def discard(self, session_name: str, value: str | None = None) -> None:
        """Forget the token of ``session_name``; only if it is ``value`` when given."""
        ...

    def exchange_lock(self, session_name: str) -> contextlib.AbstractAsyncContextManager[None]:
        """Held around one token exchange for ``session_name``, so that caches shared by
        several processes exchange once; in-process caches need nothing."""
        ...


class MemoryTokenCache:
    """``TokenCache`` in a dict of this process. Expired entries are swept as it grows.

    ``sweep_above``: entry count at which a ``put`` first drops expired tokens; the next
    sweep waits until the cache has doubled again, so sweeping stays O(1) amortised.
    """

    def __init__(self, *, clock: Clock = time.time, sweep_above: int = 10_000) -> None:
        self._tokens: dict[str, AccessToken] = {}
        self._clock = clock
        self._sweep_above = sweep_above
        self._next_sweep = sweep_above

    def __len__(self) -> int:
        return len(self._tokens)

    async def get(self, session_name: str) -> AccessToken | None:
        return self._tokens.get(session_name)

    async def put(self, session_name: str, token: AccessToken) -> None:
        if len(self._tokens) >= self._next_sweep:
            now = self._clock()
            for name in [n for n, t in self._tokens.items() if t.expires_at <= now]:
                del self._tokens[name]
            self._next_sweep = max(self._sweep_above, 2 * len(self._tokens))
        self._tokens[session_name] = token

    async def discard(self, session_name: str, value: str | None = None) -> None:
        current = self._tokens.get(session_name)
        if current is not None and (value is None or current.value == value):
            del self._tokens[session_name]

    @contextlib.asynccontextmanager
    async def exchange_lock(self, session_name: str) -> AsyncIterator[None]:
        # The token manager's in-process single-flight already gives one exchange.
        yield


_UNLOCK = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('del', KEYS[1])
end
return 0
"""


def derive_cache_key(secret_key: str) -> bytes:
    """A Fernet key for tokens at rest, derived (HKDF-SHA256) from the gateway's secret
    key, so every replica with the same ``SESSIONGATE_SECRET_KEY`` can read them and
    nothing else can."""
    raw = HKDF(
        algorithm=hashes.SHA256(), length=32, salt=None, info=b"sessiongate coze token cache"
    ).derive(secret_key.encode("utf-8"))
    return base64.urlsafe_b64encode(raw)


class RedisTokenCache:
    """``TokenCache`` in Redis, shared by every replica; tokens are Fernet-encrypted.

    Keys: ``<prefix>coze:token:<session_name>`` (expires with the token) and
    ``<prefix>coze:lock:<session_name>`` (the fleet-wide exchange lock, ``lock_ttl``
    seconds at most). A waiter for the lock gives up after ``lock_wait`` seconds and
    exchanges anyway: a second exchange is better than a failed turn. ``discard`` with a
    value compares then deletes (not atomic: at worst a fresh token is dropped and
    exchanged again).

    A token read from Redis is also kept in this process for ``local_ttl`` seconds (at
    most ``local_size`` tokens, least recently used dropped first), so a session's turns
    do not each cost a Redis round trip and a decryption. A token another replica
    discarded may so be sent for up to ``local_ttl`` seconds more: if Coze then answers
    "token invalid", the turn discards it here too and exchanges a new one
    (``CozeTokenManager``), as after any revocation.
    """

    def __init__(
        self,
        redis: Redis,
        *,
        secret_key: str,
        prefix: str = "sg:",
        clock: Clock = time.time,
        lock_ttl: float = 30.0,
        lock_wait: float = 30.0,
        local_ttl: float = 30.0,
        local_size: int = 10_000,
    ) -> None:
        self._redis = redis
        self._fernet = Fernet(derive_cache_key(secret_key))
        self._prefix = prefix
        self._clock = clock
        self._lock_ttl = lock_ttl
        self._lock_wait = lock_wait
        self._unlock = redis.register_script(_UNLOCK)
        self._local_ttl = local_ttl
        self._local_size = local_size
        # session_name -> (token, clock() when it was read or written)
        self._local: OrderedDict[str, tuple[AccessToken, float]] = OrderedDict()

    def _key(self, kind: str, session_name: str) -> str:
        return f"{self._prefix}coze:{kind}:{session_name}"

    def _remember(self, session_name: str, token: AccessToken) -> None:
        self._local[session_name] = (token, self._clock())
        self._local.move_to_end(session_name)
        while len(self._local) > self._local_size:
            self._local.popitem(last=False)

    async def get(self, session_name: str) -> AccessToken | None:
        entry = self._local.get(session_name)
        if entry is not None:
            if 0 <= self._clock() - entry[1] < self._local_ttl:
                self._local.move_to_end(session_name)
                return entry[0]
            del self._local[session_name]
        token = await self._shared(session_name)
        if token is not None:
            self._remember(session_name, token)
        return token

    async def _shared(self, session_name: str) -> AccessToken | None:
        blob = await self._redis.get(self._key("token", session_name))
        if blob is None:
            return None
        try:
            data = json.loads(self._fernet.decrypt(blob))
        except (InvalidToken, ValueError):
            # Written with another secret key (replicas disagree), or damaged.
            log.warning("a cached Coze token could not be decrypted; exchanging a new one")
            return None
        return AccessToken(value=data["v"], expires_at=float(data["e"]))

    async def put(self, session_name: str, token: AccessToken) -> None:
        ttl = max(1, int(token.expires_at - self._clock()))
        blob = self._fernet.encrypt(json.dumps({"v": token.value, "e": token.expires_at}).encode())
        await self._redis.set(self._key("token", session_name), blob, ex=ttl)
        self._remember(session_name, token)

    async def discard(self, session_name: str, value: str | None = None) -> None:
        self._local.pop(session_name, None)
        if value is not None:
            current = await self._shared(session_name)
            if current is None or current.value != value:
                return
        await self._redis.delete(self._key("token", session_name))

    @contextlib.asynccontextmanager
    async def exchange_lock(self, session_name: str) -> AsyncIterator[None]:
        # Whoever holds the lock re-reads the cache first: from Redis, where another
        # replica may just have put a fresh token, not from this process's copy.
        self._local.pop(session_name, None)
        key, holder = self._key("lock", session_name), new_id()
        deadline = time.monotonic() + self._lock_wait
        delay = 0.01
        acquired = False
        while not acquired:
            acquired = bool(
                await self._redis.set(key, holder, nx=True, px=int(self._lock_ttl * 1000))
            )
            if acquired:
                break
            if time.monotonic() >= deadline:
                log.warning(
                    "waited %.0fs for another replica's Coze token exchange", self._lock_wait
                )
                break
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.2)
        try:
            yield
        finally:
            if acquired:
                await self._unlock(keys=[key], args=[holder])


__all__ = [
    "AccessToken",
    "Clock",
    "MemoryTokenCache",
    "RedisTokenCache",
    "TokenCache",
    "derive_cache_key",
]
