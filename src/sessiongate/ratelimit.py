"""Turn rate limits with the ``limits`` library: per session and per tenant.

Windows are moving windows (``limits``' ``MovingWindowRateLimiter``), so a burst at a
window edge cannot double the rate. Storage is in-process by default; with
``SESSIONGATE_REDIS_URL`` every replica shares the counters in Redis.
"""

from __future__ import annotations

import math
import time

from limits import RateLimitItem, parse
from limits.aio.storage import MemoryStorage, Storage
from limits.aio.strategies import MovingWindowRateLimiter
from limits.storage import storage_from_string

from .errors import ConfigurationError, RateLimited
from .store import SessionRow


def _parse(setting: str, value: str | None) -> RateLimitItem | None:
    if not value:
        return None
    try:
        return parse(value)
    except ValueError as exc:
        raise ConfigurationError(f"{setting} must look like '20/minute', not {value!r}.") from exc


class TurnLimiter:
    """Admits turns within ``session_limit`` per session and ``tenant_limit`` per tenant.

    Limits use ``limits`` notation (``"20/minute"``, ``"1000/hour"``); None disables one.
    ``redis_url`` (``redis://host:port/db``) shares counters across replicas.
    """

    def __init__(
        self, *, session_limit: str | None, tenant_limit: str | None, redis_url: str | None = None
    ) -> None:
        self._session = _parse("SESSIONGATE_RATE_LIMIT", session_limit)
        self._tenant = _parse("SESSIONGATE_TENANT_RATE_LIMIT", tenant_limit)
        storage: Storage = MemoryStorage()
        if redis_url:
            shared = storage_from_string(f"async+{redis_url}", implementation="redispy")
            assert isinstance(shared, Storage)
            storage = shared
        self._limiter = MovingWindowRateLimiter(storage)

    async def hit(self, session: SessionRow) -> None:
        """Count one turn of ``session``; raises ``RateLimited`` (429, Retry-After) if over.

        Every applicable limit is tested before any is charged, so a refused turn
        costs nothing.
        """
        checks: list[tuple[RateLimitItem, str, str, str]] = []
        if self._session is not None:
            checks.append((self._session, "session", session.id, "this session"))
        if self._tenant is not None and session.tenant_id is not None:
            checks.append((self._tenant, "tenant", session.tenant_id, "this tenant"))
        for item, scope, key, who in checks:
            if not await self._limiter.test(item, scope, key):
                stats = await self._limiter.get_window_stats(item, scope, key)
                raise RateLimited(
                    f"Too many turns for {who} ({item}); try again later.",
                    code="rate_limited",
                    retry_after=max(1, math.ceil(stats.reset_time - time.time())),
                )
        for item, scope, key, _ in checks:
            await self._limiter.hit(item, scope, key)


__all__ = ["TurnLimiter"]
