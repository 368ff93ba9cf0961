"""Reply frames through a Redis Stream: batched writes keep every frame's text, in order,
with a batch's deltas joined into one entry, and the final frame flushes what is waiting
and shortens the stream's life."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from redis.asyncio import Redis

from sessiongate.replies import RedisReplyStream

from .conftest import RedisSpace

pytestmark = pytest.mark.redis


@pytest.fixture
async def client(redis_space: RedisSpace) -> AsyncIterator[Redis]:
    redis = Redis.from_url(redis_space.url)
    try:
        yield redis
    finally:
        await redis.aclose()


async def _stored(client: Redis, key: str) -> list[bytes]:
    entries: Any = await client.xrange(key)
    return [fields[b"f"] for _, fields in entries]


async def test_frames_arrive_in_order_in_fewer_writes_and_the_final_one_flushes(
    client: Redis, redis_space: RedisSpace
) -> None:
    stream = RedisReplyStream(client, prefix=redis_space.prefix, ttl=120, batch=0.2)
    key = f"{redis_space.prefix}reply:m1"
    await stream.append("m1", {"type": "start", "message_id": "m1"})
    for i in range(20):
        await stream.append("m1", {"type": "message", "content": f"w{i} "})
    # Within the batch window nothing has been written yet: one write will carry all.
    assert await client.exists(key) == 0
    await asyncio.sleep(0.4)
    # One write: the start frame, and the twenty deltas joined into one entry.
    text = "".join(f"w{i} " for i in range(20))
    assert [f.decode() for f in await _stored(client, key)] == [
        '{"type":"start","message_id":"m1"}',
        f'{{"type":"message","content":"{text}"}}',
    ]
    assert await client.ttl(key) > 120  # still streaming: kept for an hour
    await stream.append("m1", {"type": "message", "content": "last"})
    await stream.append("m1", {"type": "done", "content": ""})
    frames = await _stored(client, key)
    # The final frame returned only once it and the frame waiting before it were stored.
    assert [f.decode() for f in frames[-2:]] == [
        '{"type":"message","content":"last"}',
        '{"type":"done","content":""}',
    ]
    assert len(frames) == 4
    assert 0 < await client.ttl(key) <= 120


async def test_a_follower_reads_a_batched_reply_from_start_to_end(
    client: Redis, redis_space: RedisSpace
) -> None:
    stream = RedisReplyStream(client, prefix=redis_space.prefix, batch=0.05)

    async def produce() -> None:
        await stream.append("m2", {"type": "start", "message_id": "m2"})
        await asyncio.sleep(0.1)
        for word in ("你好", "，", "世界"):
            await stream.append("m2", {"type": "message", "content": word})
            await asyncio.sleep(0.03)
        await stream.append("m2", {"type": "done", "content": ""})

    async def alive() -> bool:
        return True

    producer = asyncio.create_task(produce())
    await asyncio.sleep(0.08)  # the start frame is stored, the text not yet
    got = [frame async for frame in stream.follow("m2", alive=alive, poll=0.2)]
    await producer
    assert got[0]["type"] == "start" and got[-1]["type"] == "done"
    assert "".join(f["content"] for f in got if f["type"] == "message") == "你好，世界"


async def _expire_calls(client: Redis) -> int:
    stats: Any = await client.info("commandstats")
    return int(stats.get("cmdstat_expire", {}).get("calls", 0))


async def test_a_reply_shorter_than_a_batch_is_stored_in_one_round_trip(
    client: Redis, redis_space: RedisSpace
) -> None:
    stream = RedisReplyStream(client, prefix=redis_space.prefix, batch=5.0)
    before = await _expire_calls(client)  # every pipeline ends with one EXPIRE
    await stream.append("m3", {"type": "start", "message_id": "m3"})
    await stream.append("m3", {"type": "message", "content": "short "})
    await stream.append("m3", {"type": "message", "content": "reply"})
    await stream.append("m3", {"type": "done", "content": ""})
    assert await _expire_calls(client) - before == 1
    assert [f.decode() for f in await _stored(client, f"{redis_space.prefix}reply:m3")] == [
        '{"type":"start","message_id":"m3"}',
        '{"type":"message","content":"short reply"}',
        '{"type":"done","content":""}',
    ]
    assert 0 < await client.ttl(f"{redis_space.prefix}reply:m3") <= 120
