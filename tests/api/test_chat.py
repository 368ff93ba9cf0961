"""POST /api/chat and /api/chat/stream in-process: replies, storage, errors."""

from __future__ import annotations

import json
from typing import Any

from ..conftest import Gateway, running_gateway
from ..fakes.openai_server import FakeOpenAI


def parse_sse(body: str) -> list[dict]:
    return [json.loads(line[6:]) for line in body.splitlines() if line.startswith("data: ")]


async def test_chat_returns_reply_and_stores_both_messages(
    gateway: Gateway, fake_openai: FakeOpenAI
) -> None:
    async with gateway.client() as client:
        r = await client.post("/api/chat", json={"message": "hello there"})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["success"] is True
        assert body["message"] == "Echo: hello there"
        assert "sessiongate_session" in r.cookies
        msgs = await client.get(f"/api/conversations/{body['conversation_id']}/messages")
        assert [(m["role"], m["content"], m["status"]) for m in msgs.json()["messages"]] == [
            ("user", "hello there", "complete"),
            ("assistant", "Echo: hello there", "complete"),
        ]
        assert msgs.json()["messages"][1]["id"] == body["message_id"]


async def test_chat_without_conversation_id_continues_latest(
    sqlite_gateway: Gateway, fake_openai: FakeOpenAI
) -> None:
    async with sqlite_gateway.client() as client:
        first = (await client.post("/api/chat", json={"message": "one"})).json()
        second = (await client.post("/api/chat", json={"message": "two"})).json()
        assert first["conversation_id"] == second["conversation_id"]
        sent = fake_openai.requests[-1].messages
        assert [m["content"] for m in sent if m["role"] != "system"] == ["one", "Echo: one", "two"]


async def test_stream_sends_message_frames_then_done(
    sqlite_gateway: Gateway, fake_openai: FakeOpenAI
) -> None:
    async with sqlite_gateway.client() as client:
        r = await client.post("/api/chat/stream", json={"message": "我叫张三"})
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        frames = parse_sse(r.text)
        deltas = [f["content"] for f in frames if f["type"] == "message"]
        assert len(deltas) > 1
        assert "".join(deltas) == "Echo: 我叫张三"
        assert frames[-1]["type"] == "done" and frames[-1]["content"] == ""
        assert frames[-1]["conversation_id"] and frames[-1]["message_id"]


async def test_provider_failure_stores_error_reply_and_keeps_user_message(
    sqlite_gateway: Gateway, fake_openai: FakeOpenAI
) -> None:
    fake_openai.behaviour.fail_status = 500
    async with sqlite_gateway.client() as client:
        r = await client.post("/api/chat", json={"message": "are you there?"})
        assert r.status_code == 502
        assert r.json()["error"]["code"] == "upstream_error"
        assert "fake failure" not in r.text  # raw upstream bodies never reach a client
        convs = (await client.get("/api/conversations")).json()["conversations"]
        msgs = (await client.get(f"/api/conversations/{convs[0]['id']}/messages")).json()[
            "messages"
        ]
        assert [(m["role"], m["status"]) for m in msgs] == [
            ("user", "complete"),
            ("assistant", "error"),
        ]
        assert msgs[0]["content"] == "are you there?"


async def test_stream_cut_mid_reply_becomes_error_frame(
    sqlite_gateway: Gateway, fake_openai: FakeOpenAI
) -> None:
    fake_openai.behaviour.cut_after_chunks = 2
    async with sqlite_gateway.client() as client:
        r = await client.post("/api/chat/stream", json={"message": "a long question here"})
        frames = parse_sse(r.text)
        assert frames[-1]["type"] == "error"
        # The connection broke after the reply had started: a cut stream, not "unreachable".
        assert frames[-1]["code"] == "upstream_error"
        msgs = (
            await client.get(f"/api/conversations/{frames[-1]['conversation_id']}/messages")
        ).json()
        reply = msgs["messages"][-1]
        assert reply["status"] == "error"
        assert reply["content"] == "Echo: a "  # the two chunks that did arrive are kept


async def test_a_malformed_upstream_chunk_ends_the_stream_with_an_error_frame(
    sqlite_gateway: Gateway, fake_openai: FakeOpenAI
) -> None:
    fake_openai.behaviour.inject = "data: {not json\n\n"
    async with sqlite_gateway.client() as client:
        r = await client.post("/api/chat/stream", json={"message": "a long question here"})
        frames = parse_sse(r.text)
        assert frames[-1]["type"] == "error"
        assert frames[-1]["code"] == "upstream_error"
        msgs = (
            await client.get(f"/api/conversations/{frames[-1]['conversation_id']}/messages")
        ).json()["messages"]
    assert [(m["role"], m["status"]) for m in msgs] == [
        ("user", "complete"),
        ("assistant", "error"),
    ]
    assert msgs[-1]["error_code"] == "upstream_error"


async def test_failed_reply_is_not_sent_as_context_next_turn(
    sqlite_gateway: Gateway, fake_openai: FakeOpenAI
) -> None:
    async with sqlite_gateway.client() as client:
        fake_openai.behaviour.fail_status = 503
        await client.post("/api/chat", json={"message": "first"})
        fake_openai.behaviour.fail_status = None
        r = await client.post("/api/chat", json={"message": "second"})
        assert r.status_code == 200
        sent = [m["content"] for m in fake_openai.requests[-1].messages if m["role"] != "system"]
        assert sent == ["first", "second"]


async def test_session_name_is_sent_as_openai_user(
    sqlite_gateway: Gateway, fake_openai: FakeOpenAI
) -> None:
    async with sqlite_gateway.client() as client:
        await client.post("/api/chat", json={"message": "hi"})
        info = (await client.get("/api/session/info")).json()
    user = fake_openai.requests[-1].user
    assert user is not None and user.startswith("sg_")
    assert info["session_id"] not in user  # opaque: no internal id leaks upstream


async def test_unreachable_upstream_is_502_with_envelope(sqlite_url: str) -> None:
    async with running_gateway(sqlite_url, None) as gw, gw.client() as client:
        r = await client.post("/api/chat", json={"message": "hi"})
    assert r.status_code == 502
    assert r.json()["error"]["code"] == "upstream_unavailable"


async def test_an_unreachable_redis_is_503_not_500(
    sqlite_url: str, fake_openai_server: tuple, fake_openai: Any
) -> None:
    """Session locks and admission live in Redis when it is configured: Redis down is a
    503 with Retry-After the client may retry, with nothing stored."""
    async with (
        running_gateway(
            sqlite_url,
            fake_openai_server[1],
            redis_url="redis://127.0.0.1:1/0",  # nothing listens on port 1
            rate_limit=None,
            anonymous_rate_limit=None,
            session_create_rate_limit=None,
            redis_pool_timeout=1,
        ) as gw,
        gw.client() as client,
    ):
        token = (await client.post("/api/session")).json()["token"]
        auth = {"Authorization": f"Bearer {token}"}
        r = await client.post("/api/chat", json={"message": "hi"}, headers=auth)
        info = (await client.get("/api/session/info", headers=auth)).json()
    assert r.status_code == 503, r.text
    assert r.json()["error"]["code"] == "coordination_unavailable"
    assert r.headers["retry-after"] == "5"
    assert info["message_count"] == 0
    assert fake_openai.requests == []
