"""The gateway's Redis clients: one blocking connection pool each, bounded.

redis-py's default asyncio pool (``Redis.from_url``) holds at most 100 connections and,
past that, fails the command at once with ``MaxConnectionsError``: under 128 concurrent
turns the gateway answered 503 ``rate_limiter_unavailable`` and lost lock releases. A
``BlockingConnectionPool`` makes a command wait for a free connection instead, for at
most ``timeout`` seconds (then ``redis.exceptions.ConnectionError``, which callers turn
into 503 or an error frame).
"""

from __future__ import annotations

from redis.asyncio import BlockingConnectionPool, Redis

#: Connections per pool (``SESSIONGATE_REDIS_MAX_CONNECTIONS``).
MAX_CONNECTIONS = 256
#: Seconds a command waits for a free connection (``SESSIONGATE_REDIS_POOL_TIMEOUT``).
POOL_TIMEOUT = 10.0


def connect_redis(
    url: str, *, max_connections: int = MAX_CONNECTIONS, timeout: float = POOL_TIMEOUT
) -> Redis:
    """A client for ``url`` (``redis://host:port/db``) on a pool of its own.

    Connections open lazily; ``await client.aclose()`` closes them and the pool.
    """
    pool = BlockingConnectionPool.from_url(url, max_connections=max_connections, timeout=timeout)
    return Redis.from_pool(pool)


__all__ = ["MAX_CONNECTIONS", "POOL_TIMEOUT", "connect_redis"]
