"""Conversations and session endpoints: paging, create, read, delete, reset, info, health."""

from __future__ import annotations

from ..conftest import Gateway
from ..fakes.openai_server import FakeOpenAI


async def test_conversation_lifecycle(gateway: Gateway, fake_openai: FakeOpenAI) -> None:
    async with gateway.client() as client:
        await client.post("/api/session")
        created = await client.post("/api/conversations", json={"title": "Trip"})
        assert created.status_code == 201
        conv = created.json()
        assert conv["title"] == "Trip" and conv["message_count"] == 0

        r = await client.post(
            "/api/chat", json={"message": "plan it", "conversation_id": conv["id"]}
        )
        assert r.json()["conversation_id"] == conv["id"]

        page = (await client.get("/api/conversations")).json()
        assert page["total"] == 1 and page["conversations"][0]["message_count"] == 2

        assert (await client.delete(f"/api/conversations/{conv['id']}")).status_code == 204
        assert (await client.get(f"/api/conversations/{conv['id']}/messages")).status_code == 404
        assert (await client.get("/api/session/info")).json()["message_count"] == 0


async def test_new_conversation_becomes_the_default_for_chat(
    gateway: Gateway, fake_openai: FakeOpenAI
) -> None:
    async with gateway.client() as client:
        first = (await client.post("/api/chat", json={"message": "one"})).json()["conversation_id"]
        fresh = (await client.post("/api/conversations", json={})).json()["id"]
        second = (await client.post("/api/chat", json={"message": "two"})).json()["conversation_id"]
        assert second == fresh != first
        assert [m["content"] for m in fake_openai.requests[-1].messages if m["role"] == "user"] == [
            "two"
        ]


async def test_conversation_titles_come_from_the_first_message(
    gateway: Gateway, fake_openai: FakeOpenAI
) -> None:
    async with gateway.client() as client:
        await client.post("/api/chat", json={"message": "  Where is\nthe station?  "})
        conv = (await client.get("/api/conversations")).json()["conversations"][0]
    assert conv["title"] == "Where is the station?"


async def test_pagination_returns_every_conversation_once(gateway: Gateway) -> None:
    async with gateway.client() as client:
        await client.post("/api/session")
        ids = {(await client.post("/api/conversations", json={})).json()["id"] for _ in range(7)}
        seen: list[str] = []
        offset = 0
        while True:
            page = (await client.get(f"/api/conversations?limit=3&offset={offset}")).json()
            assert page["total"] == 7
            if not page["conversations"]:
                break
            seen += [c["id"] for c in page["conversations"]]
            offset += 3
    assert sorted(seen) == sorted(ids)


async def test_messages_paginate_in_order(gateway: Gateway, fake_openai: FakeOpenAI) -> None:
    async with gateway.client() as client:
        for i in range(3):
            conv = (await client.post("/api/chat", json={"message": f"m{i}"})).json()[
                "conversation_id"
            ]
        first = (await client.get(f"/api/conversations/{conv}/messages?limit=4&offset=0")).json()
        rest = (await client.get(f"/api/conversations/{conv}/messages?limit=4&offset=4")).json()
    assert first["total"] == 6
    contents = [m["content"] for m in first["messages"] + rest["messages"]]
    assert contents == ["m0", "Echo: m0", "m1", "Echo: m1", "m2", "Echo: m2"]


async def test_messages_page_back_from_the_newest(
    gateway: Gateway, fake_openai: FakeOpenAI
) -> None:
    async with gateway.client() as client:
        for i in range(3):
            conv = (await client.post("/api/chat", json={"message": f"m{i}"})).json()[
                "conversation_id"
            ]
        url = f"/api/conversations/{conv}/messages"
        newest = (await client.get(f"{url}?limit=4")).json()
        older = (await client.get(f"{url}?limit=4&before={newest['messages'][0]['id']}")).json()
        foreign = await client.get(f"{url}?limit=4&before=ffffffffffffffffffffffffffffffff")
    assert [m["content"] for m in newest["messages"]] == ["m1", "Echo: m1", "m2", "Echo: m2"]
    assert newest["has_more"] is True
    assert [m["content"] for m in older["messages"]] == ["m0", "Echo: m0"]
    assert older["has_more"] is False
    assert foreign.status_code == 404 and foreign.json()["error"]["code"] == "message_not_found"


async def test_reset_deletes_conversations_and_keeps_identity(
    gateway: Gateway, fake_openai: FakeOpenAI
) -> None:
    async with gateway.client() as client:
        await client.post("/api/chat", json={"message": "forget me"})
        before = (await client.get("/api/session/info")).json()
        reset = await client.post("/api/session/reset")
        assert reset.status_code == 200
        after = (await client.get("/api/session/info")).json()
        convs = (await client.get("/api/conversations")).json()
    assert after["session_id"] == before["session_id"]
    assert after["message_count"] == 0 and after["conversation_count"] == 1
    assert convs["conversations"][0]["id"] == reset.json()["conversation"]["id"]


async def test_session_info_reports_times_and_counts(
    gateway: Gateway, fake_openai: FakeOpenAI
) -> None:
    async with gateway.client() as client:
        created = (await client.post("/api/session")).json()
        headers = {"Authorization": f"Bearer {created['token']}"}
        await client.post("/api/chat", json={"message": "hi"}, headers=headers)
        info = (await client.get("/api/session/info", headers=headers)).json()
    assert info["session_id"] == created["session_id"]
    assert info["created_at"] <= info["last_active_at"] < info["expires_at"]
    assert (info["conversation_count"], info["message_count"]) == (1, 2)


async def test_post_session_sets_the_session_cookie_and_the_jar_sends_it_back(
    gateway: Gateway,
) -> None:
    async with gateway.client() as client:
        r = await client.post("/api/session")
        cookie = r.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=lax" in cookie
        again = await client.get("/api/session/info")  # the cookie jar sends it back
    assert again.json()["session_id"] == r.json()["session_id"]


async def test_session_that_no_longer_exists_is_401_not_a_new_one(gateway: Gateway) -> None:
    from sqlalchemy import delete

    from sessiongate.store import SessionRow

    async with gateway.client() as client:
        created = (await client.post("/api/session")).json()
        async with gateway.state.sessionmaker() as db, db.begin():
            await db.execute(delete(SessionRow).where(SessionRow.id == created["session_id"]))
        r = await client.get(
            "/api/session/info", headers={"Authorization": f"Bearer {created['token']}"}
        )
    assert r.status_code == 401
    assert r.json()["error"]["code"] == "session_not_found"


async def test_expired_session_is_401(gateway: Gateway) -> None:
    from datetime import timedelta

    from sqlalchemy import update

    from sessiongate.store import SessionRow
    from sessiongate.store.models import utcnow

    async with gateway.client() as client:
        created = (await client.post("/api/session")).json()
        async with gateway.state.sessionmaker() as db, db.begin():
            await db.execute(
                update(SessionRow)
                .where(SessionRow.id == created["session_id"])
                .values(expires_at=utcnow() - timedelta(seconds=1))
            )
        r = await client.post(
            "/api/chat",
            json={"message": "hi"},
            headers={"Authorization": f"Bearer {created['token']}"},
        )
    assert r.status_code == 401
    assert r.json()["error"]["code"] == "session_expired"


async def test_health_tells_the_public_only_that_the_service_is_up(gateway: Gateway) -> None:
    async with gateway.client() as client:
        await client.post("/api/session")
        health = (await client.get("/api/health")).json()
    assert health == {"status": "ok"}


async def test_health_is_503_when_the_database_is_gone(gateway: Gateway) -> None:
    await gateway.state.engine.dispose()
    gateway.state.sessionmaker.configure(bind=_broken_engine())
    async with gateway.client() as client:
        r = await client.get("/api/health")
    assert r.status_code == 503
    assert r.json() == {"status": "degraded"}


def _broken_engine():  # noqa: ANN202
    from sqlalchemy.ext.asyncio import create_async_engine

    return create_async_engine("postgresql+asyncpg://nobody@127.0.0.1:1/none")
