"""Turn rate limits: in-process, and shared by replicas through Redis."""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator

import pytest
import redis

from sessiongate.errors import ConfigurationError, RateLimited
from sessiongate.ratelimit import ClientLimiter, TurnLimiter
from sessiongate.store import SessionRow

REDIS_URL = "redis://127.0.0.1:6379/0"


def session(tenant: str | None = None) -> SessionRow:
    return SessionRow(id=secrets.token_hex(16), tenant_id=tenant)


async def test_session_and_tenant_limits_are_separate_budgets() -> None:
    limiter = TurnLimiter(session_limit="2/minute", tenant_limit="3/minute")
    a, b = session("t1"), session("t1")
    await limiter.hit(a)
    await limiter.hit(a)
    with pytest.raises(RateLimited) as exc:
        await limiter.hit(a)  # a's own budget
    assert exc.value.status == 429 and 1 <= (exc.value.retry_after or 0) <= 60
    await limiter.hit(b)  # the tenant's third turn
    with pytest.raises(RateLimited):
        await limiter.hit(b)  # the tenant's budget, although b has one left
    await limiter.hit(session("t2"))  # another tenant is unaffected


def test_malformed_limit_names_the_setting() -> None:
    with pytest.raises(ConfigurationError) as exc:
        TurnLimiter(session_limit="lots", tenant_limit=None)
    assert "SESSIONGATE_RATE_LIMIT" in exc.value.message


def _redis_answers() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 6379), timeout=1):
            return True
    except OSError:
        return False


@pytest.fixture
def redis_prefix() -> Iterator[str]:
    """A key prefix of this test's own in Redis (skipped locally without Redis, failing
    under CI); its keys are deleted afterwards."""
    if not _redis_answers():
        if os.environ.get("CI"):
            pytest.fail("Redis does not answer on 127.0.0.1:6379")
        pytest.skip("Redis does not answer on 127.0.0.1:6379")
    prefix = f"sgtest{secrets.token_hex(6)}:"
    yield prefix
    client = redis.Redis.from_url(REDIS_URL)
    try:
        keys = list(client.scan_iter(match=f"{prefix}*"))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


async def _admitted(limiter: TurnLimiter, sessions: list[SessionRow]) -> int:
    async def one(s: SessionRow) -> bool:
        try:
            await limiter.hit(s)
        except RateLimited:
            return False
        return True

    return sum(await asyncio.gather(*(one(s) for s in sessions)))


async def test_concurrent_turns_of_one_session_admit_exactly_the_limit_in_process() -> None:
    limiter = TurnLimiter(session_limit="5/minute", tenant_limit=None)
    s = session()
    assert await _admitted(limiter, [s] * 40) == 5


async def test_concurrent_turns_of_one_tenant_admit_exactly_the_tenant_limit(
    redis_prefix: str,
) -> None:
    local = TurnLimiter(session_limit="5/minute", tenant_limit="12/minute")
    shared = TurnLimiter(
        session_limit="5/minute",
        tenant_limit="12/minute",
        redis_url=REDIS_URL,
        key_prefix=redis_prefix,
    )
    try:
        for limiter in (local, shared):
            sessions = [session("tenant-1") for _ in range(4)]
            # 4 sessions x 10 turns: each session may take 5, the tenant only 12 in all.
            assert await _admitted(limiter, sessions * 10) == 12
    finally:
        await shared.aclose()


@pytest.mark.parametrize("shared", [False, True], ids=["in-process", "redis"])
async def test_a_turn_refused_by_the_tenant_limit_costs_the_session_nothing(
    shared: bool, request: pytest.FixtureRequest
) -> None:
    redis_options = (
        {"redis_url": REDIS_URL, "key_prefix": request.getfixturevalue("redis_prefix")}
        if shared
        else {}
    )
    limiter = TurnLimiter(session_limit="2/minute", tenant_limit="1/minute", **redis_options)
    try:
        a, b = session("tenant-1"), session("tenant-1")
        await limiter.hit(a)
        for _ in range(3):
            with pytest.raises(RateLimited):
                await limiter.hit(b)  # the tenant is full
        limiter._tenant = None  # lift the tenant limit: b's own window is untouched
        await limiter.hit(b)
        await limiter.hit(b)
        with pytest.raises(RateLimited):
            await limiter.hit(b)
    finally:
        await limiter.aclose()


def test_idle_keys_are_dropped_by_later_hits_without_timers() -> None:
    from sessiongate.ratelimit import _Charge, _MemoryWindows

    windows = _MemoryWindows()
    item = TurnLimiter(session_limit="3/minute", tenant_limit=None)._session
    assert item is not None

    def charge(key: str) -> list[_Charge]:
        return [_Charge(key=key, limit=3, window=60, item=item, who="this session")]

    for n in range(1000):
        assert windows.acquire(charge(f"k{n}"), now=float(n) / 100) is None
    assert len(windows) == 1000
    # Two minutes later every one of them is idle; each hit drops a few of them.
    for n in range(200):
        windows.acquire(charge(f"new{n}"), now=130.0 + n / 100)
    assert len(windows) == 200


async def test_two_replicas_share_one_budget_through_redis(redis_prefix: str) -> None:
    replica_1 = TurnLimiter(
        session_limit="3/minute", tenant_limit=None, redis_url=REDIS_URL, key_prefix=redis_prefix
    )
    replica_2 = TurnLimiter(
        session_limit="3/minute", tenant_limit=None, redis_url=REDIS_URL, key_prefix=redis_prefix
    )
    try:
        s = session()
        await replica_1.hit(s)
        await replica_2.hit(s)
        await replica_1.hit(s)
        with pytest.raises(RateLimited) as exc:
            await replica_2.hit(s)
        assert 1 <= (exc.value.retry_after or 0) <= 60
    finally:
        await replica_1.aclose()
        await replica_2.aclose()


_REPLICA = textwrap.dedent(
    """
    import asyncio, sys
    import redis.asyncio as aioredis
    from sessiongate.errors import RateLimited
    from sessiongate.ratelimit import ClientLimiter, TurnLimiter
    from sessiongate.store import SessionRow

    async def main(url, prefix, me, other):
        limiter = TurnLimiter(
            session_limit="7/minute", tenant_limit="9/minute", redis_url=url, key_prefix=prefix
        )
        barrier = aioredis.from_url(url)
        # Meet the other process, then both fire 30 turns at once.
        await barrier.rpush(prefix + "barrier:" + other, "go")
        await barrier.blpop([prefix + "barrier:" + me], timeout=30)
        sessions = [SessionRow(id=f"s{i % 2}", tenant_id="t") for i in range(30)]

        async def one(s):
            try:
                await limiter.hit(s)
                return 1
            except RateLimited:
                return 0

        print(sum(await asyncio.gather(*(one(s) for s in sessions))))
        await barrier.aclose()
        await limiter.aclose()

    asyncio.run(main(*sys.argv[1:]))
    """
)


def test_two_processes_on_one_redis_admit_exactly_the_limit(redis_prefix: str) -> None:
    # Sessions s0 and s1 (7 each) share tenant t (9): 60 concurrent turns from two
    # processes must admit exactly 9.
    replicas = [
        subprocess.Popen(
            [sys.executable, "-c", _REPLICA, REDIS_URL, redis_prefix, me, other],
            stdout=subprocess.PIPE,
            text=True,
        )
        for me, other in (("a", "b"), ("b", "a"))
    ]
    admitted = [int(p.communicate(timeout=60)[0]) for p in replicas]
    assert all(p.returncode == 0 for p in replicas)
    assert sum(admitted) == 9


async def test_client_limits_count_sessions_and_anonymous_turns_separately() -> None:
    limiter = ClientLimiter(session_limit="2/minute", turn_limit="1/minute")
    try:
        await limiter.hit_session_created("198.51.100.7")
        await limiter.hit_session_created("198.51.100.7")
        with pytest.raises(RateLimited) as exc:
            await limiter.hit_session_created("198.51.100.7")
        assert exc.value.retry_after is not None and exc.value.retry_after >= 1
        await limiter.hit_anonymous_turn("198.51.100.7")  # its own budget
        with pytest.raises(RateLimited):
            await limiter.hit_anonymous_turn("198.51.100.7")
        await limiter.hit_session_created("198.51.100.8")  # another client
    finally:
        await limiter.aclose()


async def test_two_replicas_share_one_client_budget_through_redis(redis_prefix: str) -> None:
    client = f"client-{secrets.token_hex(8)}"
    replicas = [
        ClientLimiter(
            session_limit="2/minute", turn_limit=None, redis_url=REDIS_URL, key_prefix=redis_prefix
        )
        for _ in range(2)
    ]
    try:
        await replicas[0].hit_session_created(client)
        await replicas[1].hit_session_created(client)
        with pytest.raises(RateLimited):
            await replicas[0].hit_session_created(client)
    finally:
        for replica in replicas:
            await replica.aclose()


async def test_concurrent_new_sessions_of_one_client_admit_exactly_the_limit() -> None:
    limiter = ClientLimiter(session_limit="4/minute", turn_limit=None)

    async def one() -> bool:
        try:
            await limiter.hit_session_created("198.51.100.9")
        except RateLimited:
            return False
        return True

    assert sum(await asyncio.gather(*(one() for _ in range(30)))) == 4
