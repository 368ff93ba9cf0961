"""Coze tokens shared by every replica through Redis: one exchange per session_name for
the whole fleet, encrypted at rest, forgotten everywhere at once. Each "replica" here is
a token manager with its own Redis client and HTTP pool (two real processes:
tests/fleet). Each replica also keeps tokens in memory for a while (``local_ttl``)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest
from redis.asyncio import Redis

from sessiongate.coze import CozeTokenManager, RedisTokenCache
from sessiongate.coze.cache import AccessToken
from sessiongate.coze.settings import CozeSettings

from ..conftest import RedisSpace
from ..fakes.coze_server import FakeClock, FakeCoze

pytestmark = pytest.mark.redis

SECRET = "fleet-secret-key-0123456789abcdefghijklmnopqrstuvwxyz"
LOCAL_TTL = 30.0  # RedisTokenCache's default


@pytest.fixture
async def replicas(
    redis_space: RedisSpace, make_settings: Callable[..., CozeSettings], clock: FakeClock
) -> AsyncIterator[list[CozeTokenManager]]:
    managers, clients = [], []
    for _ in range(2):
        client = Redis.from_url(redis_space.url)
        clients.append(client)
        cache = RedisTokenCache(client, secret_key=SECRET, prefix=redis_space.prefix, clock=clock)
        managers.append(
            CozeTokenManager.from_settings(make_settings(), clock=clock, cache=cache, backoff=0.001)
        )
    yield managers
    for manager in managers:
        await manager.aclose()
    for client in clients:
        await client.aclose()


async def test_concurrent_first_turns_on_two_replicas_exchange_one_token(
    replicas: list[CozeTokenManager], fake_coze: FakeCoze
) -> None:
    tokens = await asyncio.gather(
        *(replicas[i % 2].access_token(name) for name in ("a", "b", "c") for i in range(10))
    )
    assert fake_coze.exchanges == {"a": 1, "b": 1, "c": 1}
    assert len(set(tokens)) == 3
    assert {fake_coze.tokens[token].session_name for token in tokens} == {"a", "b", "c"}


async def test_tokens_are_encrypted_at_rest_and_unreadable_with_another_key(
    replicas: list[CozeTokenManager], redis_space: RedisSpace, clock: FakeClock
) -> None:
    token = await replicas[0].access_token("a")
    client = Redis.from_url(redis_space.url)
    try:
        raw = await client.get(f"{redis_space.prefix}coze:token:a")
        stranger = RedisTokenCache(
            client, secret_key="another-secret-" * 4, prefix=redis_space.prefix, clock=clock
        )
        assert raw is not None and token.encode() not in raw
        assert await stranger.get("a") is None
    finally:
        await client.aclose()


async def test_forgetting_on_one_replica_reaches_the_others_within_the_local_ttl(
    replicas: list[CozeTokenManager], fake_coze: FakeCoze, clock: FakeClock
) -> None:
    first = await replicas[0].access_token("a")
    assert await replicas[1].access_token("a") == first
    await replicas[1].invalidate("a")
    # Replica 0 still holds it in memory (a turn there that Coze refuses discards it).
    assert await replicas[0].access_token("a") == first
    clock.advance(LOCAL_TTL)
    fresh = await replicas[0].access_token("a")
    assert fresh != first
    assert await replicas[1].access_token("a") == fresh
    assert fake_coze.exchanges == {"a": 2}


async def test_a_replica_reads_redis_once_per_local_ttl(
    replicas: list[CozeTokenManager], fake_coze: FakeCoze, redis_space: RedisSpace, clock: FakeClock
) -> None:
    token = await replicas[0].access_token("a")
    client = Redis.from_url(redis_space.url)
    try:
        await client.delete(f"{redis_space.prefix}coze:token:a")  # Redis is not asked again
        clock.advance(LOCAL_TTL - 1)
        assert await replicas[0].access_token("a") == token
        assert fake_coze.exchanges == {"a": 1}
        clock.advance(1)  # the local copy lapsed: Redis is asked, finds none, exchanges
        assert await replicas[0].access_token("a") != token
        assert fake_coze.exchanges == {"a": 2}
    finally:
        await client.aclose()


async def test_a_replica_whose_token_coze_refused_takes_the_fleets_fresh_one(
    replicas: list[CozeTokenManager], fake_coze: FakeCoze
) -> None:
    first = await replicas[0].access_token("a")
    assert await replicas[1].access_token("a") == first
    await replicas[1].invalidate("a", first)
    fresh = await replicas[1].access_token("a")
    await replicas[0].invalidate("a", first)  # replica 0's turn was refused with `first`
    assert await replicas[0].access_token("a") == fresh
    assert fake_coze.exchanges == {"a": 2}


async def test_a_stale_invalidation_does_not_drop_the_fresh_token(
    replicas: list[CozeTokenManager], fake_coze: FakeCoze
) -> None:
    old = await replicas[0].access_token("a")
    await replicas[0].invalidate("a", old)
    fresh = await replicas[1].access_token("a")
    await replicas[0].invalidate("a", old)  # a late turn that failed with the old token
    assert await replicas[0].access_token("a") == fresh
    assert fake_coze.exchanges == {"a": 2}


async def test_the_exchange_lock_holder_reads_redis_not_its_own_copy(
    redis_space: RedisSpace, clock: FakeClock
) -> None:
    # Replica b still holds the old token in memory when replica a has refreshed it:
    # the re-check under the exchange lock must find a's token, not exchange again.
    clients = [Redis.from_url(redis_space.url) for _ in range(2)]
    try:
        a, b = (
            RedisTokenCache(c, secret_key=SECRET, prefix=redis_space.prefix, clock=clock)
            for c in clients
        )
        old, new = AccessToken("old", clock() + 100), AccessToken("new", clock() + 900)
        await a.put("s", old)
        assert await b.get("s") == old
        await a.put("s", new)
        assert await b.get("s") == old  # b's copy, within the local TTL
        async with b.exchange_lock("s"):
            assert await b.get("s") == new
    finally:
        for client in clients:
            await client.aclose()
