"""Following a reply in this process (``LiveReply.follow``): text held back for the flush
interval goes out as one frame, the end and other frames never wait, keep-alives fill
silences."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator

import httpx
import pytest

from sessiongate.replies import Frame, LiveReply

from .api.test_chat import parse_sse
from .conftest import LiveGateway

START: Frame = {"type": "start", "conversation_id": "c1", "message_id": "m1"}
DONE: Frame = {"type": "done", "content": "", "finish_reason": "stop"}


def text(content: str) -> Frame:
    return {"type": "message", "content": content}


class Collector:
    """Reads a follower in a task of its own, recording each frame with its arrival time."""

    def __init__(self, frames: AsyncGenerator[Frame | None, None]) -> None:
        self.got: list[tuple[float, Frame | None]] = []
        self._frames = frames
        self.task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        loop = asyncio.get_running_loop()
        async for frame in self._frames:
            self.got.append((loop.time(), frame))

    @property
    def frames(self) -> list[Frame | None]:
        return [frame for _, frame in self.got]


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_text_within_the_interval_goes_out_as_one_frame_when_it_ends() -> None:
    live = LiveReply("s1", "c1", "m1")
    reader = Collector(live.follow(flush_interval=0.3))
    live.push(START)
    live.push(text("Hel"))
    await settle()
    assert reader.frames == [START, text("Hel")]  # the first text never waits
    sent = asyncio.get_running_loop().time()
    for piece in ("lo", ", ", "wor", "ld"):
        live.push(text(piece))
        await asyncio.sleep(0.02)
    assert reader.frames == [START, text("Hel")]  # held back: the interval is not over
    await asyncio.sleep(0.4)
    at, frame = reader.got[-1]
    assert frame == text("lo, world")  # four deltas, one frame
    assert at >= sent + 0.29
    live.push(DONE)
    await asyncio.wait_for(reader.task, 1)
    assert reader.frames == [START, text("Hel"), text("lo, world"), DONE]


async def test_the_end_flushes_held_text_at_once() -> None:
    live = LiveReply("s1", "c1", "m1")
    reader = Collector(live.follow(flush_interval=10.0))
    live.push(START)
    live.push(text("a"))
    await settle()
    live.push(text("b"))
    live.push(text("c"))
    await settle()
    assert reader.frames == [START, text("a")]
    live.push(DONE)
    # Far sooner than the 10-s interval: the final frame takes the held text with it.
    await asyncio.wait_for(reader.task, 1)
    assert reader.frames == [START, text("a"), text("bc"), DONE]


async def test_text_after_a_quiet_interval_goes_out_at_once() -> None:
    live = LiveReply("s1", "c1", "m1")
    reader = Collector(live.follow(flush_interval=0.1))
    live.push(START)
    live.push(text("one"))
    await asyncio.sleep(0.3)  # longer than the interval, nothing new
    live.push(text("two"))
    await settle()
    assert reader.frames == [START, text("one"), text("two")]
    live.push(DONE)
    await asyncio.wait_for(reader.task, 1)


async def test_without_an_interval_every_delta_is_a_frame_of_its_own() -> None:
    live = LiveReply("s1", "c1", "m1")
    for frame in (START, text("a"), text("b"), text("c"), DONE):
        live.push(frame)
    got = [frame async for frame in live.follow()]
    assert got == [START, text("a"), text("b"), text("c"), DONE]


async def test_silence_yields_keepalives_and_held_text_is_no_silence() -> None:
    live = LiveReply("s1", "c1", "m1")
    reader = Collector(live.follow(keepalive=0.1, flush_interval=0.4))
    live.push(START)
    await asyncio.sleep(0.25)
    assert reader.frames[0] == START
    assert reader.frames[1:] and all(frame is None for frame in reader.frames[1:])
    live.push(text("x"))
    await settle()
    live.push(text("y"))  # held for the 0.4-s interval, longer than the keep-alive
    seen = len(reader.frames)
    await asyncio.sleep(0.25)
    assert reader.frames[seen - 1 :] == [text("x")]  # no keep-alive while text waits
    live.push(DONE)
    await asyncio.wait_for(reader.task, 1)
    assert reader.frames[-3:] == [text("x"), text("y"), DONE]


async def test_catching_up_then_following_with_an_interval() -> None:
    live = LiveReply("s1", "c1", "m1")
    for frame in (START, text("a"), text("b")):
        live.push(frame)
    reader = Collector(live.follow(catch_up=True, flush_interval=5.0))
    await settle()
    assert reader.frames == [START, text("ab")]
    live.push(text("c"))
    live.push(DONE)
    await asyncio.wait_for(reader.task, 1)
    assert reader.frames == [START, text("ab"), text("c"), DONE]


async def test_a_follower_that_leaves_is_no_longer_woken() -> None:
    live = LiveReply("s1", "c1", "m1")
    live.push(START)
    reader = Collector(live.follow(flush_interval=0.05))
    await settle()
    reader.task.cancel()
    await asyncio.gather(reader.task, return_exceptions=True)
    assert live._waiters == []  # it took its waiter with it
    live.push(text("after"))
    live.push(DONE)  # nothing waits any more: pushing wakes no one and raises nothing
    assert reader.frames == [START]


@pytest.mark.gateway_settings(stream_flush_interval=0.15)
async def test_a_streamed_turn_sends_fewer_frames_than_upstream_deltas(
    live_gateway: LiveGateway,
) -> None:
    live_gateway.fake.behaviour.chunk_size = 1
    live_gateway.fake.behaviour.chunk_delay = 0.02
    async with httpx.AsyncClient(base_url=live_gateway.url, timeout=30) as client:
        r = await client.post("/api/chat/stream", json={"message": "streaming in pieces"})
    assert r.status_code == 200
    frames = parse_sse(r.text)
    deltas = [f["content"] for f in frames if f["type"] == "message"]
    reply = "Echo: streaming in pieces"
    assert "".join(deltas) == reply
    assert deltas[0] == "E"  # the first delta alone, at once
    # 25 upstream deltas over ~0.5 s, flushed every 0.15 s: a handful of frames.
    assert live_gateway.fake.chunks_sent >= len(reply)
    assert 2 <= len(deltas) <= 8
    assert frames[-1]["type"] == "done"
