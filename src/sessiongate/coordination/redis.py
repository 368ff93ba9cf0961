"""Session coordination on Redis: one round trip per step, atomic by Lua scripts.

Keys (under the configured prefix): ``lock:<session>`` holds the holder's token with a
TTL (``SET NX PX``); ``fence:<session>`` counts hand-overs (the fencing token);
``turns:<session>`` is a sorted set of turns in progress scored by when each lapses.
"""

from __future__ import annotations

import time
from typing import Any

from redis.asyncio import Redis

from .base import LockLease

_LOCK = """
if redis.call('set', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return redis.call('incr', KEYS[2])
end
return 0
"""
_RENEW = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('pexpire', KEYS[1], ARGV[2])
end
return 0
"""
_UNLOCK = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('del', KEYS[1])
end
return 0
"""
_UNLOCK_AND_LEAVE = """
redis.call('zrem', KEYS[2], ARGV[2])
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('del', KEYS[1])
end
return 0
"""
_ADMIT = """
redis.call('zremrangebyscore', KEYS[1], '-inf', ARGV[1])
if redis.call('zcard', KEYS[1]) >= tonumber(ARGV[2]) then
  return 0
end
redis.call('zadd', KEYS[1], ARGV[3], ARGV[4])
redis.call('pexpire', KEYS[1], ARGV[5])
return 1
"""


class RedisCoordinator:
    """``Coordinator`` on Redis. ``prefix`` namespaces every key (e.g. ``sg:``)."""

    def __init__(self, redis: Redis, *, prefix: str) -> None:
        self._redis = redis
        self._prefix = prefix
        self._lock = redis.register_script(_LOCK)
        self._renew = redis.register_script(_RENEW)
        self._unlock = redis.register_script(_UNLOCK)
        self._admit = redis.register_script(_ADMIT)
        self._unlock_and_leave = redis.register_script(_UNLOCK_AND_LEAVE)

    def _key(self, kind: str, session_id: str) -> str:
        return f"{self._prefix}{kind}:{session_id}"

    async def try_lock(self, session_id: str, token: str, *, ttl: float) -> LockLease | None:
        keys = [self._key("lock", session_id), self._key("fence", session_id)]
        fence: Any = await self._lock(keys=keys, args=[token, int(ttl * 1000)])
        return LockLease(session_id, token, int(fence)) if int(fence) else None

    async def renew(self, lease: LockLease, *, ttl: float) -> bool:
        keys = [self._key("lock", lease.session_id)]
        return bool(await self._renew(keys=keys, args=[lease.token, int(ttl * 1000)]))

    async def unlock(self, lease: LockLease) -> None:
        await self._unlock(keys=[self._key("lock", lease.session_id)], args=[lease.token])

    async def is_locked(self, session_id: str) -> bool:
        return bool(await self._redis.exists(self._key("lock", session_id)))

    async def admit(self, session_id: str, turn_id: str, *, limit: int, ttl: float) -> bool:
        now = time.time()
        admitted: Any = await self._admit(
            keys=[self._key("turns", session_id)],
            args=[now, limit, now + ttl, turn_id, int(ttl * 1000)],
        )
        return bool(admitted)

    async def leave(self, session_id: str, turn_id: str) -> None:
        await self._redis.zrem(self._key("turns", session_id), turn_id)

    async def unlock_and_leave(self, lease: LockLease, turn_id: str) -> None:
        keys = [self._key("lock", lease.session_id), self._key("turns", lease.session_id)]
        await self._unlock_and_leave(keys=keys, args=[lease.token, turn_id])

    async def aclose(self) -> None:
        return None  # the Redis client is owned (and closed) by the app's lifespan


__all__ = ["RedisCoordinator"]
