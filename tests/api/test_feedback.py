"""Feedback on replies (api/feedback.py): stored per message, keyed by the caller's
session, counted in /api/admin/stats and listed for admins by rating; SQLite and
PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from sqlalchemy import event

from ..conftest import Gateway, running_gateway
from ..fakes.openai_server import FakeOpenAI

ADMIN_TOKEN = "admin-secret-feedback-0123456789"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


@pytest.fixture
async def gw(
    database_url: str, fake_openai_server: tuple[FakeOpenAI, str], fake_openai: FakeOpenAI
) -> AsyncIterator[Gateway]:
    async with running_gateway(
        database_url, fake_openai_server[1], admin_token=ADMIN_TOKEN, admin_can_read_chats=True
    ) as gateway:
        yield gateway


async def _turn(client: httpx.AsyncClient, text: str, **extra: Any) -> dict[str, Any]:
    r = await client.post("/api/chat", json={"message": text, **extra})
    assert r.status_code == 200, r.text
    return dict(r.json())


async def _rate(
    client: httpx.AsyncClient, conversation_id: str, message_id: str, rating: str | None
) -> httpx.Response:
    return await client.post(
        f"/api/conversations/{conversation_id}/messages/{message_id}/feedback",
        json={"rating": rating},
    )


async def test_rating_a_reply_is_stored_shown_with_the_message_and_can_be_taken_back(
    gw: Gateway,
) -> None:
    async with gw.client() as client:
        turn = await _turn(client, "hello", new_conversation=True)
        cid, mid = turn["conversation_id"], turn["message_id"]
        r = await _rate(client, cid, mid, "down")
        assert r.status_code == 200 and r.json() == {"message_id": mid, "rating": "down"}
        messages = (await client.get(f"/api/conversations/{cid}/messages")).json()["messages"]
        assert [m["feedback"] for m in messages] == [None, "down"]

        assert (await _rate(client, cid, mid, "up")).json()["rating"] == "up"
        assert (await _rate(client, cid, mid, None)).json()["rating"] is None
        messages = (await client.get(f"/api/conversations/{cid}/messages")).json()["messages"]
        assert messages[1]["feedback"] is None


async def test_another_sessions_reply_cannot_be_rated_and_user_messages_are_not_replies(
    gw: Gateway,
) -> None:
    async with gw.client() as alice, gw.client() as mallory:
        turn = await _turn(alice, "mine", new_conversation=True)
        cid, mid = turn["conversation_id"], turn["message_id"]
        await _turn(mallory, "hi", new_conversation=True)
        r = await _rate(mallory, cid, mid, "down")
        assert r.status_code == 404 and r.json()["error"]["code"] == "message_not_found"

        user_id = (await alice.get(f"/api/conversations/{cid}/messages")).json()["messages"][0]
        r = await _rate(alice, cid, user_id["id"], "up")
        assert r.status_code == 400 and r.json()["error"]["code"] == "not_a_reply"
        r = await alice.post(
            f"/api/conversations/{cid}/messages/{mid}/feedback", json={"rating": "meh"}
        )
        assert r.status_code == 422


async def test_admin_stats_count_feedback_and_the_list_filters_by_rating(gw: Gateway) -> None:
    async with gw.client() as client:
        cid = (await _turn(client, "q1", new_conversation=True))["conversation_id"]
        first = (await _turn(client, "q2", conversation_id=cid))["message_id"]
        second = (await _turn(client, "q3", conversation_id=cid))["message_id"]
        third = (await _turn(client, "q4", conversation_id=cid))["message_id"]
        for mid, rating in ((first, "down"), (second, "down"), (third, "up")):
            assert (await _rate(client, cid, mid, rating)).status_code == 200

        stats = (await client.get("/api/admin/stats", headers=ADMIN)).json()
        assert stats["feedback"] == {"up": 1, "down": 2}

        down = (await client.get("/api/admin/feedback?rating=down", headers=ADMIN)).json()
        assert {item["message_id"] for item in down["items"]} == {first, second}
        # Most recently rated first, with the question each reply answered.
        assert down["items"][0]["message_id"] == second
        assert down["items"][0]["question"] == "q3"
        assert down["items"][0]["reply"] == "Echo: q3"
        everything = (await client.get("/api/admin/feedback", headers=ADMIN)).json()
        assert len(everything["items"]) == 3
        page = (await client.get("/api/admin/feedback?limit=2", headers=ADMIN)).json()
        assert len(page["items"]) == 2 and page["next_before"] is not None
        rest = (
            await client.get(
                "/api/admin/feedback",
                params={"limit": 2, "before": page["next_before"]},
                headers=ADMIN,
            )
        ).json()
        assert [i["message_id"] for i in rest["items"]] == [first]
        assert (await client.get("/api/admin/feedback")).status_code == 403  # a chat session


async def test_admin_feedback_list_hides_text_unless_admins_may_read_chats(
    sqlite_url: str, fake_openai_server: tuple[FakeOpenAI, str], fake_openai: FakeOpenAI
) -> None:
    async with (
        running_gateway(sqlite_url, fake_openai_server[1], admin_token=ADMIN_TOKEN) as gateway,
        gateway.client() as client,
    ):
        turn = await _turn(client, "secret question", new_conversation=True)
        await _rate(client, turn["conversation_id"], turn["message_id"], "down")
        item = (await client.get("/api/admin/feedback", headers=ADMIN)).json()["items"][0]
        assert item["question"] is None and item["reply"] is None
        assert item["session_id"] and item["rating"] == "down"


async def test_the_admin_feedback_list_costs_the_same_statements_for_one_or_many_replies(
    gw: Gateway,
) -> None:
    async def statements_for_list(client: httpx.AsyncClient) -> tuple[int, list[Any]]:
        seen: list[str] = []

        def record(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
            if "messages" in statement:
                seen.append(statement)

        engine = gw.state.engine.sync_engine
        event.listen(engine, "before_cursor_execute", record)
        try:
            items = (await client.get("/api/admin/feedback", headers=ADMIN)).json()["items"]
        finally:
            event.remove(engine, "before_cursor_execute", record)
        return len(seen), items

    async with gw.client() as client:
        cid = (await _turn(client, "q0", new_conversation=True))["conversation_id"]
        first = (await _turn(client, "q1", conversation_id=cid))["message_id"]
        assert (await _rate(client, cid, first, "up")).status_code == 200
        one, items = await statements_for_list(client)
        assert [i["question"] for i in items] == ["q1"]
        for n in range(2, 8):
            mid = (await _turn(client, f"q{n}", conversation_id=cid))["message_id"]
            assert (await _rate(client, cid, mid, "down")).status_code == 200
        many, items = await statements_for_list(client)
    assert [i["question"] for i in items] == [f"q{n}" for n in range(7, 0, -1)]
    assert many == one <= 2  # the page, then the questions: not one query per reply
