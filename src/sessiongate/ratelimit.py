"""Turn rate limits: per session and per tenant, moving windows, exact under concurrency.

Limits are written in the ``limits`` library's notation (``"20/minute"``) and counted
as moving windows (a burst at a window edge cannot double the rate). A turn is charged
against every limit that applies in one indivisible step, or refused by the first one
that is full and charged nowhere: N concurrent turns against a limit of L admit exactly
L, in one process and across replicas.

- In process (default): a synchronous section on the event loop, so nothing can
  interleave. A key keeps at most L timestamps, pruned when it is hit; keys idle for a
  whole window are dropped a few at a time by later hits (no timers, no per-key
  tasks), so a hit costs the same with ten keys or a million.
- ``SESSIONGATE_REDIS_URL``: one Lua script per turn (one round trip) tests and charges
  the session's and the tenant's windows together, on Redis's clock; keys expire with
  their window.

Why not ``limits``' own storages: its moving-window ``hit`` is atomic for one key, but
session + tenant would be two round trips with the session charged even when the
tenant refuses, and its in-memory storage expires keys with one ``asyncio.to_thread``
per key on every pass (a second per pass at 11,000 keys).
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict, deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from limits import RateLimitItem, parse
from redis.exceptions import RedisError

from .errors import ConfigurationError, RateLimited, ServiceBusy
from .redis_pool import connect_redis
from .store import SessionRow


def _parse(setting: str, value: str | None) -> RateLimitItem | None:
    if not value:
        return None
    try:
        return parse(value)
    except ValueError as exc:
        raise ConfigurationError(f"{setting} must look like '20/minute', not {value!r}.") from exc


@dataclass(frozen=True, slots=True)
class _Charge:
    """One window a turn is counted in: ``limit`` turns per ``window`` seconds."""

    key: str
    limit: int
    window: int
    item: RateLimitItem
    who: str


class _MemoryWindows:
    """Moving windows in this process: key -> timestamps (seconds) of its hits, oldest
    first, ordered by last hit so idle keys are found at the front."""

    _SWEEP = 8  # idle keys dropped per hit at most; amortised O(1)

    def __init__(self) -> None:
        self._windows: OrderedDict[str, tuple[deque[float], int]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._windows)

    def acquire(self, charges: Sequence[_Charge], now: float) -> tuple[int, float] | None:
        """Charge every window or none. None when charged; else (index of the full
        charge, seconds until it has room). Synchronous: atomic on the event loop."""
        self._sweep(now)
        found: list[deque[float]] = []
        for index, charge in enumerate(charges):
            entry = self._windows.get(charge.key)
            stamps: deque[float] = entry[0] if entry is not None else deque()
            horizon = now - charge.window
            while stamps and stamps[0] <= horizon:
                stamps.popleft()
            if len(stamps) >= charge.limit:
                return index, stamps[0] + charge.window - now
            found.append(stamps)
        for charge, stamps in zip(charges, found, strict=True):
            stamps.append(now)
            self._windows[charge.key] = (stamps, charge.window)
            self._windows.move_to_end(charge.key)
        return None

    def _sweep(self, now: float) -> None:
        # The front key was hit least recently; once it is still live, all later are.
        for _ in range(self._SWEEP):
            if not self._windows:
                return
            key, (stamps, window) = next(iter(self._windows.items()))
            if stamps and stamps[-1] > now - window:
                return
            del self._windows[key]


# KEYS: one list per window, newest timestamp first. ARGV: limit and window (ms) per
# key. Returns {0, 0} when charged, else {index (1-based) of the full window, ms until
# it has room}. Time is Redis's, so replicas' clocks need not agree.
_ACQUIRE_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
for i, key in ipairs(KEYS) do
  local limit = tonumber(ARGV[2 * i - 1])
  local window = tonumber(ARGV[2 * i])
  local oldest = redis.call('LINDEX', key, limit - 1)
  if oldest and tonumber(oldest) > now - window then
    return {i, tonumber(oldest) + window - now}
  end
end
for i, key in ipairs(KEYS) do
  local limit = tonumber(ARGV[2 * i - 1])
  local window = tonumber(ARGV[2 * i])
  redis.call('LPUSH', key, now)
  redis.call('LTRIM', key, 0, limit - 1)
  redis.call('PEXPIRE', key, window)
end
return {0, 0}
"""


class _Windows:
    """The windows' storage: in process, or in Redis under ``key_prefix`` when
    ``redis_url`` is set. ``acquire`` charges every given window or none."""

    def __init__(
        self, *, redis_url: str | None, key_prefix: str, redis_pool: Mapping[str, Any]
    ) -> None:
        self.prefix = f"{key_prefix}rl:"
        self._memory = _MemoryWindows()
        self._redis: aioredis.Redis | None = None
        if redis_url:
            self._redis = connect_redis(redis_url, **redis_pool)
            self._script = self._redis.register_script(_ACQUIRE_LUA)

    def charge(self, item: RateLimitItem, scope: str, key: str, who: str) -> _Charge:
        window = item.get_expiry()
        return _Charge(
            key=f"{self.prefix}{scope}:{item.amount}/{window}:{key}",
            limit=item.amount,
            window=window,
            item=item,
            who=who,
        )

    async def acquire(self, charges: Sequence[_Charge]) -> tuple[int, float] | None:
        """None when every window was charged; else (index of the full one, seconds
        until it has room). Raises ``ServiceBusy`` (503) when Redis cannot be reached."""
        if self._redis is None:
            return self._memory.acquire(charges, time.monotonic())
        args: list[int] = []
        for charge in charges:
            args += [charge.limit, charge.window * 1000]
        try:
            index, wait_ms = await self._script(keys=[c.key for c in charges], args=args)
        except RedisError as exc:
            raise ServiceBusy(
                "The shared rate limiter cannot be reached; try again shortly.",
                code="rate_limiter_unavailable",
                retry_after=5,
            ) from exc
        if int(index) == 0:
            return None
        return int(index) - 1, int(wait_ms) / 1000

    async def aclose(self) -> None:
        if self._redis is not None:
            await self._redis.aclose()


def _refusal(wait: float, message: str) -> RateLimited:
    return RateLimited(message, code="rate_limited", retry_after=max(1, math.ceil(wait)))


class TurnLimiter:
    """Admits turns within ``session_limit`` per session and ``tenant_limit`` per tenant.

    Limits use ``limits`` notation (``"20/minute"``, ``"1000/hour"``); None disables
    one. ``redis_url`` (``redis://host:port/db``) shares the windows across replicas,
    under keys starting with ``key_prefix``; ``redis_pool`` takes ``connect_redis``'s
    pool options. ``aclose`` releases the Redis connections.
    """

    def __init__(
        self,
        *,
        session_limit: str | None,
        tenant_limit: str | None,
        redis_url: str | None = None,
        key_prefix: str = "sg:",
        redis_pool: Mapping[str, Any] | None = None,
    ) -> None:
        self._session = _parse("SESSIONGATE_RATE_LIMIT", session_limit)
        self._tenant = _parse("SESSIONGATE_TENANT_RATE_LIMIT", tenant_limit)
        self._windows = _Windows(
            redis_url=redis_url, key_prefix=key_prefix, redis_pool=redis_pool or {}
        )

    async def hit(self, session: SessionRow) -> None:
        """Count one turn of ``session``; raises ``RateLimited`` (429, Retry-After) if over.

        Every applicable limit is charged, or none is: a refused turn costs nothing.
        Raises ``ServiceBusy`` (503) when Redis cannot be reached.
        """
        charges: list[_Charge] = []
        if self._session is not None:
            charges.append(
                self._windows.charge(self._session, "session", session.id, "this session")
            )
        if self._tenant is not None and session.tenant_id is not None:
            charges.append(
                self._windows.charge(self._tenant, "tenant", session.tenant_id, "this tenant")
            )
        if not charges:
            return
        refused = await self._windows.acquire(charges)
        if refused is not None:
            charge = charges[refused[0]]
            raise _refusal(
                refused[1],
                f"Too many turns for {charge.who} ({charge.item}); try again later.",
            )

    async def aclose(self) -> None:
        """Close the Redis connection pool, if any (the app's lifespan calls this)."""
        await self._windows.aclose()


class ClientLimiter:
    """Per-client-address limits on anonymous use: new sessions and anonymous turns.

    Security: a session's own rate limit means nothing to a client that can mint
    sessions at will, so anonymous sessions are also counted per client address
    (``api.clients.client_address``). ``session_limit`` and ``turn_limit`` use
    ``limits`` notation; None disables one. ``redis_url`` shares counters across
    replicas (keys under ``key_prefix``; pool options in ``redis_pool``). Exact and
    key-count-independent like ``TurnLimiter``. Close with ``aclose()``.
    """

    def __init__(
        self,
        *,
        session_limit: str | None,
        turn_limit: str | None,
        redis_url: str | None = None,
        key_prefix: str = "sg:",
        redis_pool: Mapping[str, Any] | None = None,
    ) -> None:
        self._sessions = _parse("SESSIONGATE_SESSION_CREATE_RATE_LIMIT", session_limit)
        self._turns = _parse("SESSIONGATE_ANONYMOUS_RATE_LIMIT", turn_limit)
        self._windows = _Windows(
            redis_url=redis_url, key_prefix=key_prefix, redis_pool=redis_pool or {}
        )

    async def _hit(self, item: RateLimitItem | None, scope: str, client: str, what: str) -> None:
        if item is None:
            return
        charge = self._windows.charge(item, scope, client, "your address")
        refused = await self._windows.acquire([charge])
        if refused is not None:
            raise _refusal(
                refused[1], f"Too many {what} from your address ({item}); try again later."
            )

    async def hit_session_created(self, client: str) -> None:
        """Count one new anonymous session for ``client``; ``RateLimited`` (429) if over."""
        await self._hit(self._sessions, "client-sessions", client, "new sessions")

    async def hit_anonymous_turn(self, client: str) -> None:
        """Count one anonymous turn for ``client``; ``RateLimited`` (429) if over."""
        await self._hit(self._turns, "client-turns", client, "messages")

    async def aclose(self) -> None:
        """Close the Redis connection pool, if any."""
        await self._windows.aclose()


__all__ = ["ClientLimiter", "TurnLimiter"]
