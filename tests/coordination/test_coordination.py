"""Session locks and turn admission hold between independent coordinators — each with
its own engine or Redis client, as two processes would have — on the database (SQLite
and PostgreSQL) and on Redis. (Two real processes: tests/fleet.)"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from sessiongate.coordination import (
    DatabaseCoordinator,
    LockLease,
    RedisCoordinator,
    SessionCoordination,
)
from sessiongate.errors import SessionBusy
from sessiongate.store import create_engine, create_sessionmaker, migrate

from ..conftest import RedisSpace, fresh_postgres, fresh_redis_space


@pytest.fixture(
    params=[
        "sqlite",
        pytest.param("postgres", marks=pytest.mark.postgres),
        pytest.param("redis", marks=pytest.mark.redis),
    ]
)
async def pair(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[tuple[SessionCoordination, SessionCoordination]]:
    """Two coordinators that share only the store, like two gateway processes."""
    closers: list[Any] = []
    coordinators = []
    stack = contextlib.AsyncExitStack()
    if request.param != "redis":
        database_url = (
            f"sqlite+aiosqlite:///{tmp_path / 'c.db'}"
            if request.param == "sqlite"
            else await fresh_postgres()
        )
        await migrate(database_url)
        for _ in range(2):
            engine = create_engine(database_url)
            closers.append(engine.dispose)
            backend: Any = DatabaseCoordinator(create_sessionmaker(engine))
            coordinators.append(SessionCoordination(backend, lock_ttl=2.0))
    else:
        space = await stack.enter_async_context(fresh_redis_space())
        for _ in range(2):
            client = Redis.from_url(space.url)
            closers.append(client.aclose)
            backend = RedisCoordinator(client, prefix=space.prefix)
            coordinators.append(SessionCoordination(backend, lock_ttl=2.0))
    try:
        yield coordinators[0], coordinators[1]
    finally:
        for close in closers:
            await close()
        await stack.aclose()


async def test_a_session_lock_excludes_the_other_process(
    pair: tuple[SessionCoordination, SessionCoordination],
) -> None:
    one, two = pair
    held = await one.acquire("s1", wait=1)
    with pytest.raises(SessionBusy) as busy:
        await two.acquire("s1", wait=0.2)
    assert busy.value.code == "session_busy" and busy.value.status == 409
    other = await two.acquire("s2", wait=0.2)  # another session never waits
    await other.release()
    assert await two.is_locked("s1")
    await held.release()
    again = await two.acquire("s1", wait=1)
    assert not (await one.is_locked("s2"))
    await again.release()


async def test_a_waiting_turn_gets_the_lock_when_the_other_process_releases(
    pair: tuple[SessionCoordination, SessionCoordination],
) -> None:
    one, two = pair
    held = await one.acquire("s1", wait=1)
    waiter = asyncio.create_task(two.acquire("s1", wait=5))
    await asyncio.sleep(0.3)
    assert not waiter.done()
    await held.release()
    second = await waiter
    await second.release()


async def test_only_one_of_many_concurrent_contenders_holds_the_lock(
    pair: tuple[SessionCoordination, SessionCoordination],
) -> None:
    inside = 0
    most = 0

    async def turn(coordination: SessionCoordination) -> None:
        nonlocal inside, most
        held = await coordination.acquire("s1", wait=20)
        inside += 1
        most = max(most, inside)
        await asyncio.sleep(0.01)
        inside -= 1
        await held.release()

    await asyncio.gather(*(turn(pair[i % 2]) for i in range(10)))
    assert most == 1


async def test_a_lock_whose_holder_died_lapses_after_its_ttl(
    pair: tuple[SessionCoordination, SessionCoordination],
) -> None:
    one, two = pair
    # A holder that stops renewing (its process died): take the shared lock directly.
    lease = await one.backend.try_lock("s1", "dead-holder", ttl=0.5)
    assert lease is not None
    with pytest.raises(SessionBusy):
        await two.acquire("s1", wait=0.1)
    held = await two.acquire("s1", wait=3)
    await held.release()


async def test_a_held_lock_is_renewed_past_its_ttl(
    pair: tuple[SessionCoordination, SessionCoordination],
) -> None:
    one, two = pair
    held = await one.acquire("s1", wait=1)
    await asyncio.sleep(3)  # longer than lock_ttl=2: only renewal keeps it
    with pytest.raises(SessionBusy):
        await two.acquire("s1", wait=0.1)
    assert not held.lost
    await held.release()


async def test_admission_admits_exactly_the_limit_across_processes(
    pair: tuple[SessionCoordination, SessionCoordination],
) -> None:
    results = await asyncio.gather(
        *(pair[i % 2].admit("s1", f"turn{i}", limit=3, ttl=30) for i in range(12))
    )
    assert sum(results) == 3
    admitted = [f"turn{i}" for i, ok in enumerate(results) if ok]
    await pair[1].leave("s1", admitted[0])
    assert await pair[0].admit("s1", "late", limit=3, ttl=30)
    assert not await pair[0].admit("s1", "later", limit=3, ttl=30)
    assert await pair[0].admit("s2", "other-session", limit=3, ttl=30)


class _RenewSwallowsCancellation(RedisCoordinator):
    """Redis coordination whose renewal, cancelled mid-call, carries on and returns, as
    a redis-py call was seen doing under 128 concurrent turns."""

    def __init__(self, client: Redis, *, prefix: str) -> None:
        super().__init__(client, prefix=prefix)
        self.renewing = asyncio.Event()
        self.swallowed = 0
        self.lapse = False

    async def renew(self, lease: LockLease, *, ttl: float) -> bool:
        if self.lapse:
            return False
        self.renewing.set()
        try:
            await asyncio.sleep(0.5)
        except asyncio.CancelledError:
            self.swallowed += 1
        return await super().renew(lease, ttl=ttl)


@pytest.mark.redis
async def test_releasing_a_lock_ends_even_if_its_renewal_swallows_the_cancellation(
    redis_space: RedisSpace,
) -> None:
    client = Redis.from_url(redis_space.url)
    try:
        backend = _RenewSwallowsCancellation(client, prefix=redis_space.prefix)
        coordination = SessionCoordination(backend, lock_ttl=1.5)
        held = await coordination.acquire("s1", wait=1)
        await backend.renewing.wait()
        release = asyncio.create_task(held.release())
        done, _ = await asyncio.wait({release}, timeout=8)
        if not done:  # before the fix: waited for ever (the release is shielded)
            backend.lapse = True  # let the renewer end, so the failure gets reported
            await release
        assert done, "release() waited for a renewer that swallowed its cancellation"
        # The renewal in flight was let finish (a database renewal is a write), not
        # cancelled; before the fix it was cancelled and swallowed that, for ever.
        assert backend.swallowed == 0
        assert not await coordination.is_locked("s1")
        again = await coordination.acquire("s1", wait=1)
        await again.release()
    finally:
        await client.aclose()
