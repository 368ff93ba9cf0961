"""Isolation: what one session says never reaches another session's context or API.

The recording upstream is the fake OpenAI server: it records the exact messages each
turn sent over the wire, keyed by the OpenAI ``user`` field (the session_name).
"""

from __future__ import annotations

import asyncio

import httpx
import jwt
import pytest

from .conftest import SECRET, Gateway
from .fakes.openai_server import FakeOpenAI

PAIRS = [
    ("我叫张三", "我叫李四", "张三", "李四"),
    ("My name is Alice.", "My name is Bob.", "Alice", "Bob"),
]


async def new_session(client: httpx.AsyncClient) -> dict[str, str]:
    r = await client.post("/api/session")
    assert r.status_code == 201
    return {"Authorization": f"Bearer {r.json()['token']}"}


async def session_name_of(fake: FakeOpenAI, before: int) -> str:
    user = fake.requests[before].user
    assert user is not None
    return user


@pytest.mark.parametrize(("a_says", "b_says", "a_name", "b_name"), PAIRS)
async def test_context_sent_for_a_holds_only_a_messages(
    gateway: Gateway, fake_openai: FakeOpenAI, a_says: str, b_says: str, a_name: str, b_name: str
) -> None:
    async with gateway.client() as client:
        a, b = await new_session(client), await new_session(client)
        await client.post("/api/chat", json={"message": a_says}, headers=a)
        a_user = fake_openai.requests[-1].user
        await client.post("/api/chat", json={"message": b_says}, headers=b)
        b_user = fake_openai.requests[-1].user
        assert a_user != b_user
        await client.post("/api/chat", json={"message": "What is my name? 我叫什么？"}, headers=a)
        await client.post("/api/chat", json={"message": "What is my name? 我叫什么？"}, headers=b)

    a_context = " ".join(m["content"] for r in fake_openai.requests_for(a_user) for m in r.messages)
    b_context = " ".join(m["content"] for r in fake_openai.requests_for(b_user) for m in r.messages)
    assert a_name in a_context and b_name not in a_context
    assert b_name in b_context and a_name not in b_context
    assert len(fake_openai.requests_for(a_user)) == 2


async def test_b_cannot_list_read_or_delete_a_conversation(
    gateway: Gateway, fake_openai: FakeOpenAI
) -> None:
    async with gateway.client() as client:
        a, b = await new_session(client), await new_session(client)
        conv_id = (
            await client.post("/api/chat", json={"message": "secret of A"}, headers=a)
        ).json()["conversation_id"]
        listed = (await client.get("/api/conversations", headers=b)).json()
        assert listed["conversations"] == [] and listed["total"] == 0

        foreign = await client.get(f"/api/conversations/{conv_id}/messages", headers=b)
        missing = await client.get(f"/api/conversations/{'0' * 32}/messages", headers=b)
        assert foreign.status_code == missing.status_code == 404
        assert foreign.json() == missing.json()  # a foreign id looks exactly like a missing one

        assert (await client.delete(f"/api/conversations/{conv_id}", headers=b)).status_code == 404
        chat = await client.post(
            "/api/chat", json={"message": "hi", "conversation_id": conv_id}, headers=b
        )
        assert chat.status_code == 404
        assert "secret of A" not in chat.text

        # Still all there for A.
        msgs = (await client.get(f"/api/conversations/{conv_id}/messages", headers=a)).json()
        assert [m["content"] for m in msgs["messages"]] == ["secret of A", "Echo: secret of A"]


async def test_b_reset_does_not_touch_a(gateway: Gateway, fake_openai: FakeOpenAI) -> None:
    async with gateway.client() as client:
        a, b = await new_session(client), await new_session(client)
        await client.post("/api/chat", json={"message": "keep me"}, headers=a)
        await client.post("/api/session/reset", headers=b)
        info = (await client.get("/api/session/info", headers=a)).json()
        assert info["message_count"] == 2


@pytest.mark.parametrize(
    "forge",
    [
        "tampered_payload",
        "wrong_key",
        "alg_none",
        "expired",
        "garbage",
    ],
)
async def test_forged_or_tampered_token_is_refused(
    gateway: Gateway, fake_openai: FakeOpenAI, forge: str
) -> None:
    async with gateway.client() as client:
        a = await new_session(client)
        token = a["Authorization"].removeprefix("Bearer ")
        claims = jwt.decode(token, SECRET, algorithms=["HS256"])
        header, payload, signature = token.split(".")
        if forge == "tampered_payload":
            other = jwt.encode({**claims, "sub": "f" * 32}, "x" * 40, algorithm="HS256").split(".")[
                1
            ]
            bad = f"{header}.{other}.{signature}"
        elif forge == "wrong_key":
            bad = jwt.encode(claims, "another-secret-key-that-is-long-enough!!", algorithm="HS256")
        elif forge == "alg_none":
            bad = jwt.encode(claims, None, algorithm="none")  # type: ignore[arg-type]
        elif forge == "expired":
            bad = jwt.encode({**claims, "iat": 1, "exp": 2}, SECRET, algorithm="HS256")
        else:
            bad = "not.a.token"
        before = (await client.get("/api/session/info", headers=a)).json()
        for headers, cookie in (({"Authorization": f"Bearer {bad}"}, None), ({}, bad)):
            client.cookies.clear()
            if cookie is not None:
                client.cookies.set("sessiongate_session", cookie)
            r = await client.post("/api/chat", json={"message": "hi"}, headers=headers)
            assert r.status_code == 401, r.text
            expected = "token_expired" if forge == "expired" else "invalid_token"
            assert r.json()["error"]["code"] == expected
            assert "set-cookie" not in r.headers  # never a silently new session
        client.cookies.clear()
        after = (await client.get("/api/session/info", headers=a)).json()
        assert after["message_count"] == before["message_count"] == 0


async def test_user_id_chosen_by_client_is_refused(
    gateway: Gateway, fake_openai: FakeOpenAI
) -> None:
    async with gateway.client() as client:
        a = await new_session(client)
        for body in ({"message": "hi", "user_id": "victim"}, {"message": "hi", "user": "victim"}):
            r = await client.post("/api/chat", json=body, headers=a)
            assert r.status_code == 403
            assert r.json()["error"]["code"] == "user_not_allowed"
        r = await client.post(
            "/api/chat", json={"message": "hi"}, headers={**a, "X-Sessiongate-User": "victim"}
        )
        assert r.status_code == 403
        assert (await client.get("/api/session/info", headers=a)).json()["message_count"] == 0
    assert fake_openai.requests == []


async def test_twenty_sessions_five_concurrent_turns_each_keep_their_own_history(
    gateway: Gateway, fake_openai: FakeOpenAI
) -> None:
    fake_openai.behaviour.chunk_delay = 0.001
    async with gateway.client(timeout=120) as client:
        sessions = [await new_session(client) for _ in range(20)]

        async def turn(i: int, k: int) -> None:
            r = await client.post("/api/chat", json={"message": f"s{i}-m{k}"}, headers=sessions[i])
            assert r.status_code == 200, r.text

        await asyncio.gather(*(turn(i, k) for i in range(20) for k in range(5)))

        for i, headers in enumerate(sessions):
            convs = (await client.get("/api/conversations", headers=headers)).json()
            assert convs["total"] == 1
            msgs = (
                await client.get(
                    f"/api/conversations/{convs['conversations'][0]['id']}/messages",
                    headers=headers,
                )
            ).json()["messages"]
            assert len(msgs) == 10
            users = [m["content"] for m in msgs if m["role"] == "user"]
            replies = [m["content"] for m in msgs if m["role"] == "assistant"]
            assert sorted(users) == [f"s{i}-m{k}" for k in range(5)]
            # In order: each reply answers the user message just before it.
            assert [m["role"] for m in msgs] == ["user", "assistant"] * 5
            assert replies == [f"Echo: {u}" for u in users]
    # Each upstream request held only its own session's messages.
    for recorded in fake_openai.requests:
        owners = {
            m["content"].removeprefix("Echo: ").split("-")[0]
            for m in recorded.messages
            if m["role"] != "system"
        }
        assert len(owners) == 1
