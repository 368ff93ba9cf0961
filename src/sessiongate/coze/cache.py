"""Where Coze access tokens are kept between turns, keyed by ``session_name``.

``TokenCache`` is the small interface the token manager needs; ``MemoryTokenCache``
keeps tokens in this process. A cache shared by several replicas (e.g. Redis)
implements the same three calls.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

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


__all__ = ["AccessToken", "Clock", "MemoryTokenCache", "TokenCache"]
