"""Streaming against a real uvicorn on loopback: frames arrive while the reply is being
generated, and a client that disconnects stops generation and leaves an incomplete reply."""

from __future__ import annotations

import json
import time

import httpx
import pytest

from .conftest import LiveGateway, wait_until


async def test_frames_arrive_before_generation_ends(live_gateway: LiveGateway) -> None:
    fake = live_gateway.fake
    fake.behaviour.chunk_delay = 0.05
    fake.behaviour.reply = lambda _: "word " * 40  # 50 chunks x 50 ms = ~2.5 s of generation
    async with httpx.AsyncClient(base_url=live_gateway.url, timeout=30) as client:
        async with client.stream("POST", "/api/chat/stream", json={"message": "talk"}) as r:
            assert r.status_code == 200
            first_delta_at = None
            chunks_sent_at_first_delta = None
            lines = r.aiter_lines()
            async for line in lines:
                if line.startswith("data: ") and json.loads(line[6:])["type"] == "message":
                    first_delta_at = time.monotonic()
                    chunks_sent_at_first_delta = fake.chunks_sent
                    break
            async for _ in lines:
                pass
            finished_at = time.monotonic()
    assert first_delta_at is not None and chunks_sent_at_first_delta is not None
    # The first frame reached us while the upstream still had most of the reply to send.
    assert chunks_sent_at_first_delta < 25
    assert finished_at - first_delta_at > 1.0


@pytest.mark.gateway_settings(on_disconnect="cancel")
async def test_client_disconnect_stops_generation_and_stores_incomplete_under_cancel(
    live_gateway: LiveGateway,
) -> None:
    fake = live_gateway.fake
    fake.behaviour.chunk_delay = 0.05
    fake.behaviour.chunk_size = 2
    fake.behaviour.reply = lambda _: "abcdefghij" * 40  # 200 chunks: ~10 s if not stopped
    received = ""
    conversation_id = None
    async with httpx.AsyncClient(base_url=live_gateway.url, timeout=30) as client:
        await client.post("/api/session")
        conversation_id = (await client.post("/api/conversations", json={})).json()["id"]
        async with client.stream(
            "POST",
            "/api/chat/stream",
            json={"message": "go on", "conversation_id": conversation_id},
        ) as r:
            async for line in r.aiter_lines():
                if line.startswith("data: "):
                    frame = json.loads(line[6:])
                    received += frame.get("content", "")
                    if len(received) >= 6:
                        break
        # Leaving the `stream` block closes the connection mid-reply.

    await wait_until(lambda: fake.disconnects == 1, timeout=10)
    sent_when_stopped = fake.chunks_sent
    assert sent_when_stopped < 100  # generation stopped long before the end

    async def stored() -> bool:
        return len(await live_gateway.messages(conversation_id)) == 2

    await wait_until(stored, timeout=10)
    (user_role, user_status, user_text), (role, status, content) = await live_gateway.messages(
        conversation_id
    )
    assert (user_role, user_status, user_text) == ("user", "complete", "go on")
    assert (role, status) == ("assistant", "incomplete")
    assert content.startswith(received) and len(content) < 400


async def test_keepalive_comments_while_the_model_is_silent(live_gateway: LiveGateway) -> None:
    fake = live_gateway.fake
    fake.behaviour.chunk_delay = 1.2  # longer than the test gateway's 0.5 s keep-alive interval
    fake.behaviour.reply = lambda _: "ok"
    fake.behaviour.chunk_size = 1
    lines: list[str] = []
    async with httpx.AsyncClient(base_url=live_gateway.url, timeout=30) as client:
        async with client.stream("POST", "/api/chat/stream", json={"message": "wait"}) as r:
            async for line in r.aiter_lines():
                lines.append(line)
    assert ": keep-alive" in lines
    frames = [json.loads(line[6:]) for line in lines if line.startswith("data: ")]
    assert frames[-1]["type"] == "done"
    assert frames[0]["type"] == "start"
    assert "".join(f["content"] for f in frames if f["type"] == "message") == "ok"


async def test_second_turn_of_a_session_waits_for_the_first(live_gateway: LiveGateway) -> None:
    import asyncio

    fake = live_gateway.fake
    fake.behaviour.chunk_delay = 0.02
    async with httpx.AsyncClient(base_url=live_gateway.url, timeout=30) as client:
        await client.post("/api/session")  # one session, held in the cookie jar
        replies = await asyncio.gather(
            *(client.post("/api/chat", json={"message": f"q{i}"}) for i in range(3))
        )
        conv = replies[0].json()["conversation_id"]
    rows = await live_gateway.messages(conv)
    assert [r[0] for r in rows] == ["user", "assistant"] * 3
    # Each turn saw the whole history of the turns before it: strictly serialised.
    sizes = sorted(len(r.messages) for r in fake.requests)
    assert sizes == [2, 4, 6]  # system + 1, 3, 5 history messages
