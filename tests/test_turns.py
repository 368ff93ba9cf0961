"""The turn as the core runs it: replies independent of the connection (reattach, stop),
the session lock (409 after SESSIONGATE_TURN_WAIT), the reply cap, regenerate and edit,
turn admission, and the recovery of replies whose process stopped."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import event

from sessiongate.app import create_app
from sessiongate.providers import TextDelta
from sessiongate.store import ConversationRow, MessageRow
from sessiongate.store.models import new_id, utcnow

from .conftest import (
    Gateway,
    LiveGateway,
    RedisSpace,
    make_settings,
    running_gateway,
    wait_until,
)
from .fakes.openai_server import FakeOpenAI
from .fakes.servers import ServerThread

SLOW = "abcdefghij" * 20  # 100 chunks of 2 characters


def slow(fake: FakeOpenAI, delay: float = 0.03) -> None:
    fake.behaviour.chunk_delay = delay
    fake.behaviour.chunk_size = 2
    fake.behaviour.reply = lambda _: SLOW


async def frames_of(response: httpx.Response) -> AsyncIterator[dict[str, Any]]:
    async for line in response.aiter_lines():
        if line.startswith("data: "):
            yield json.loads(line[6:])


async def new_session(client: httpx.AsyncClient) -> None:
    token = (await client.post("/api/session")).json()["token"]
    client.headers["Authorization"] = f"Bearer {token}"


class _AnyId:
    """Equal to any 32-character id."""

    def __eq__(self, other: object) -> bool:
        return isinstance(other, str) and len(other) == 32


ANY = _AnyId()


async def test_a_reply_goes_on_after_its_client_leaves_and_can_be_reattached(
    live_gateway: LiveGateway,
) -> None:
    slow(live_gateway.fake)
    async with httpx.AsyncClient(base_url=live_gateway.url, timeout=30) as client:
        await new_session(client)
        received = ""
        async with client.stream("POST", "/api/chat/stream", json={"message": "go"}) as r:
            frames = frames_of(r)
            start = await anext(frames)
            async for frame in frames:
                received += frame.get("content", "")
                if len(received) >= 6:
                    break
        conversation = start["conversation_id"]
        assert start == {"type": "start", "conversation_id": conversation, "message_id": ANY}
        async with client.stream("GET", f"/api/conversations/{conversation}/reply") as r:
            assert r.status_code == 200
            again = [f async for f in frames_of(r)]
        messages = (await client.get(f"/api/conversations/{conversation}/messages")).json()
    assert again[0]["type"] == "start" and again[0]["message_id"] == start["message_id"]
    assert again[1]["type"] == "message" and again[1]["content"].startswith(received)
    assert "".join(f["content"] for f in again if f["type"] == "message") == SLOW
    assert again[-1]["type"] == "done" and again[-1]["finish_reason"] == "stop"
    assert [(m["role"], m["status"]) for m in messages["messages"]] == [
        ("user", "complete"),
        ("assistant", "complete"),
    ]
    assert messages["messages"][1]["content"] == SLOW
    assert live_gateway.fake.disconnects == 0


async def test_stop_ends_the_reply_and_keeps_it_incomplete(live_gateway: LiveGateway) -> None:
    slow(live_gateway.fake)
    async with httpx.AsyncClient(base_url=live_gateway.url, timeout=30) as client:
        await new_session(client)
        async with client.stream("POST", "/api/chat/stream", json={"message": "go"}) as r:
            frames = frames_of(r)
            start = await anext(frames)
            await anext(frames)  # the reply has begun
            conversation = start["conversation_id"]
            stop = await client.post(f"/api/conversations/{conversation}/stop")
            rest = [f async for f in frames]
        again = await client.post(f"/api/conversations/{conversation}/stop")
        reattach = await client.get(f"/api/conversations/{conversation}/reply")
        messages = (await client.get(f"/api/conversations/{conversation}/messages")).json()
    assert stop.status_code == 200 and stop.json() == {"stopped": True}
    assert rest[-1]["type"] == "done" and rest[-1]["finish_reason"] == "cancelled"
    assert again.json() == {"stopped": False}
    assert reattach.status_code == 404 and reattach.json()["error"]["code"] == "reply_not_found"
    reply = messages["messages"][1]
    assert (reply["status"], reply["finish_reason"]) == ("incomplete", "cancelled")
    assert 0 < len(reply["content"]) < len(SLOW)


async def test_another_sessions_conversation_cannot_be_followed_or_stopped(
    live_gateway: LiveGateway,
) -> None:
    slow(live_gateway.fake)
    async with (
        httpx.AsyncClient(base_url=live_gateway.url, timeout=30) as alice,
        httpx.AsyncClient(base_url=live_gateway.url, timeout=30) as mallory,
    ):
        await new_session(alice)
        await new_session(mallory)
        async with alice.stream("POST", "/api/chat/stream", json={"message": "go"}) as r:
            frames = frames_of(r)
            start = await anext(frames)
            conversation = start["conversation_id"]
            follow = await mallory.get(f"/api/conversations/{conversation}/reply")
            stop = await mallory.post(f"/api/conversations/{conversation}/stop")
            rest = [f async for f in frames]
    for response in (follow, stop):
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "conversation_not_found"
    assert rest[-1]["type"] == "done" and rest[-1]["finish_reason"] == "stop"


@pytest.mark.gateway_settings(turn_wait=0.3)
async def test_a_turn_that_waits_too_long_for_the_session_gets_409_and_stores_nothing(
    live_gateway: LiveGateway,
) -> None:
    slow(live_gateway.fake)
    async with httpx.AsyncClient(base_url=live_gateway.url, timeout=30) as client:
        await new_session(client)
        async with client.stream("POST", "/api/chat/stream", json={"message": "first"}) as r:
            frames = frames_of(r)
            start = await anext(frames)
            conversation = start["conversation_id"]
            second = await client.post(
                "/api/chat", json={"message": "second", "conversation_id": conversation}
            )
            rest = [f async for f in frames]
    assert second.status_code == 409
    assert second.json()["error"]["code"] == "session_busy"
    assert second.headers["retry-after"] == "1"
    assert rest[-1]["type"] == "done"
    rows = await live_gateway.messages(conversation)
    assert [(role, content[:5]) for role, _, content in rows] == [
        ("user", "first"),
        ("assistant", SLOW[:5]),
    ]


@pytest.mark.gateway_settings(max_concurrent_turns=1, turn_wait=10)
async def test_turns_beyond_the_concurrent_cap_get_429_and_store_nothing(
    live_gateway: LiveGateway,
) -> None:
    slow(live_gateway.fake, 0.01)
    async with httpx.AsyncClient(base_url=live_gateway.url, timeout=30) as client:
        await new_session(client)
        async with client.stream("POST", "/api/chat/stream", json={"message": "first"}) as r:
            frames = frames_of(r)
            start = await anext(frames)
            refused = await client.post(
                "/api/chat", json={"message": "x", "conversation_id": start["conversation_id"]}
            )
            [f async for f in frames]
        after = await client.post(
            "/api/chat", json={"message": "later", "conversation_id": start["conversation_id"]}
        )
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "too_many_concurrent_turns"
    assert after.status_code == 200  # the slot was given back
    rows = await live_gateway.messages(start["conversation_id"])
    assert [content[:5] for role, _, content in rows if role == "user"] == ["first", "later"]


async def test_the_reply_cap_stores_the_reply_incomplete_with_reason_length(
    sqlite_url: str, fake_openai_server: tuple[FakeOpenAI, str], fake_openai: FakeOpenAI
) -> None:
    fake_openai.behaviour.reply = lambda _: "0123456789" * 5
    async with (
        running_gateway(sqlite_url, fake_openai_server[1], max_reply_chars=12) as gw,
        gw.client() as client,
    ):
        reply = await client.post("/api/chat", json={"message": "long"})
        conversation = reply.json()["conversation_id"]
        messages = (await client.get(f"/api/conversations/{conversation}/messages")).json()
    assert reply.status_code == 200
    assert reply.json()["message"] == "012345678901"
    assert reply.json()["finish_reason"] == "length"
    stored = messages["messages"][1]
    assert (stored["status"], stored["finish_reason"]) == ("incomplete", "length")


async def test_regenerate_and_edit_last_replace_the_end_of_the_conversation(
    sqlite_gateway: Gateway, fake_openai: FakeOpenAI
) -> None:
    async with sqlite_gateway.client() as client:
        first = (await client.post("/api/chat", json={"message": "one"})).json()
        conversation = first["conversation_id"]
        await client.post("/api/chat", json={"message": "two", "conversation_id": conversation})
        fake_openai.behaviour.reply = lambda _: "second try"
        again = await client.post(
            "/api/chat", json={"message": "", "conversation_id": conversation, "regenerate": True}
        )
        fake_openai.behaviour.reply = lambda m: f"Echo: {m[-1]['content']}"
        edited = await client.post(
            "/api/chat",
            json={"message": "TWO", "conversation_id": conversation, "edit_last": True},
        )
        messages = (await client.get(f"/api/conversations/{conversation}/messages")).json()
        no_id = await client.post("/api/chat", json={"message": "", "regenerate": True})
    assert again.status_code == 200 and again.json()["message"] == "second try"
    assert edited.status_code == 200 and edited.json()["message"] == "Echo: TWO"
    assert [m["content"] for m in messages["messages"]] == ["one", "Echo: one", "TWO", "Echo: TWO"]
    # The regenerated turn saw the history up to "two" and not its old reply.
    regenerate_request = fake_openai.requests[2].messages
    assert [m["content"] for m in regenerate_request[1:]] == ["one", "Echo: one", "two"]
    assert no_id.status_code == 400 and no_id.json()["error"]["code"] == "conversation_required"


async def test_new_conversation_starts_a_fresh_one_and_the_next_turn_continues_it(
    sqlite_gateway: Gateway, fake_openai: FakeOpenAI
) -> None:
    async with sqlite_gateway.client() as client:
        a = (await client.post("/api/chat", json={"message": "a"})).json()["conversation_id"]
        b = (await client.post("/api/chat", json={"message": "b", "new_conversation": True})).json()
        c = (await client.post("/api/chat", json={"message": "c"})).json()
        listing = (await client.get("/api/conversations")).json()
    assert b["conversation_id"] != a
    assert c["conversation_id"] == b["conversation_id"]
    assert listing["total"] == 2
    assert fake_openai.requests[-1].messages[-3]["content"] == "b"


async def test_recovery_marks_a_reply_whose_process_died_interrupted(
    sqlite_gateway: Gateway, fake_openai: FakeOpenAI
) -> None:
    async with sqlite_gateway.client() as client:
        first = (await client.post("/api/chat", json={"message": "hello"})).json()
        info = (await client.get("/api/session/info")).json()
    # What a killed process leaves behind: a streaming reply with partial text, no lock.
    state = sqlite_gateway.state
    now = utcnow()
    async with state.sessionmaker() as db, db.begin():
        conversation = await db.get(ConversationRow, first["conversation_id"])
        assert conversation is not None
        orphan = MessageRow(
            id=new_id(),
            session_id=info["session_id"],
            conversation_id=conversation.id,
            position=conversation.next_position + 1,
            role="assistant",
            content="half a rep",
            status="streaming",
            created_at=now,
            stop_requested=False,
        )
        conversation.next_position += 1
        db.add(orphan)
    assert await state.chat.recover_interrupted() == 1
    assert await state.chat.recover_interrupted() == 0
    async with state.sessionmaker() as db:
        row = await db.get(MessageRow, orphan.id)
    assert row is not None and (row.status, row.content) == ("interrupted", "half a rep")


async def test_recovery_leaves_a_reply_alone_while_its_session_lock_is_held(
    sqlite_gateway: Gateway, fake_openai: FakeOpenAI
) -> None:
    slow(fake_openai)
    state = sqlite_gateway.state
    async with sqlite_gateway.client() as client:
        session = (await client.post("/api/session")).json()
        client.headers["Authorization"] = f"Bearer {session['token']}"
        task = asyncio.create_task(client.post("/api/chat", json={"message": "go"}))
        await wait_until(lambda: len(state.chat.replies) == 1)
        assert await state.chat.recover_interrupted() == 0
        reply = await task
    assert reply.status_code == 200 and reply.json()["message"] == SLOW


@contextlib.contextmanager
def two_replicas(database_url: str, openai_url: str, **overrides: Any) -> Iterator[tuple[str, str]]:
    """Two gateways sharing one database (and Redis when ``redis_url`` is given)."""
    settings = make_settings(database_url, openai_url, **overrides)
    with ServerThread(create_app(settings)) as one, ServerThread(create_app(settings)) as two:
        yield one.url, two.url


@pytest.mark.parametrize("shared", ["database", pytest.param("redis", marks=pytest.mark.redis)])
async def test_a_reply_started_on_one_replica_is_followed_and_stopped_through_another(
    shared: str,
    sqlite_url: str,
    fake_openai_server: tuple[FakeOpenAI, str],
    fake_openai: FakeOpenAI,
    redis_space: RedisSpace,
) -> None:
    slow(fake_openai, 0.02)
    overrides: dict[str, Any] = {"reply_save_interval": 0.1}
    if shared == "redis":
        overrides |= {"redis_url": redis_space.url, "redis_prefix": redis_space.prefix}
    with two_replicas(sqlite_url, fake_openai_server[1], **overrides) as (one, two):
        async with (
            httpx.AsyncClient(base_url=one, timeout=30) as first,
            httpx.AsyncClient(base_url=two, timeout=30) as second,
        ):
            await new_session(first)
            second.headers["Authorization"] = first.headers["Authorization"]
            async with first.stream("POST", "/api/chat/stream", json={"message": "go"}) as r:
                start = await anext(frames_of(r))
            conversation = start["conversation_id"]
            async with second.stream("GET", f"/api/conversations/{conversation}/reply") as r:
                assert r.status_code == 200
                followed = [f async for f in frames_of(r)]
            assert followed[0]["message_id"] == start["message_id"]
            assert "".join(f["content"] for f in followed if f["type"] == "message") == SLOW
            assert followed[-1]["type"] == "done"

            async with first.stream(
                "POST",
                "/api/chat/stream",
                json={"message": "again", "conversation_id": conversation},
            ) as r:
                frames = frames_of(r)
                await anext(frames)
                stop = await second.post(f"/api/conversations/{conversation}/stop")
                rest = [f async for f in frames]
            assert stop.json() == {"stopped": True}
            assert rest[-1]["type"] == "done" and rest[-1]["finish_reason"] == "cancelled"


class _QueuedProvider:
    """A provider with a bounded queue like the embedded model's (``max_pending``),
    answering slowly, so turns pile up in front of it."""

    name = "queued"
    # Room for one turn of each session at once, not for a session's piled-up turns.
    max_pending = 3

    async def stream_reply(self, request: Any) -> Any:
        for word in ("slow ", "reply"):
            await asyncio.sleep(0.2)
            yield TextDelta(word)

    async def aclose(self) -> None:
        return None


async def test_one_sessions_waiting_turns_hold_one_queue_slot_so_others_get_in(
    sqlite_url: str,
) -> None:
    settings = make_settings(sqlite_url, None, max_concurrent_turns=8)
    app = create_app(settings, provider=_QueuedProvider())
    async with app.router.lifespan_context(app):
        gw = Gateway(app, settings)
        async with gw.client() as greedy, gw.client() as other:
            await new_session(greedy)
            await new_session(other)
            first = (await greedy.post("/api/chat", json={"message": "start"})).json()
            body = {"message": "again", "conversation_id": first["conversation_id"]}
            piled = [asyncio.create_task(greedy.post("/api/chat", json=body)) for _ in range(4)]
            await wait_until(lambda: gw.state.chat.turns_in_progress == 1)
            answer = await other.post("/api/chat", json={"message": "me too"})
            results = await asyncio.gather(*piled)
    assert answer.status_code == 200
    assert [r.status_code for r in results] == [200] * 4


async def test_a_turn_whose_conversation_was_deleted_while_it_waited_gets_404(
    live_gateway: LiveGateway,
) -> None:
    slow(live_gateway.fake, 0.01)
    async with httpx.AsyncClient(base_url=live_gateway.url, timeout=30) as client:
        await new_session(client)
        async with client.stream("POST", "/api/chat/stream", json={"message": "first"}) as r:
            frames = frames_of(r)
            start = await anext(frames)
            conversation = start["conversation_id"]
            # Both wait for the running turn, the delete first (same process: FIFO).
            delete = asyncio.create_task(client.delete(f"/api/conversations/{conversation}"))
            await asyncio.sleep(0.2)
            late = asyncio.create_task(
                client.post("/api/chat", json={"message": "late", "conversation_id": conversation})
            )
            [f async for f in frames]
        deleted, answer = await delete, await late
    assert deleted.status_code == 204
    assert answer.status_code == 404
    assert answer.json()["error"]["code"] == "conversation_not_found"
    assert await live_gateway.messages(conversation) == []


@pytest.mark.gateway_settings(turn_timeout=1.0, idle_timeout=10.0)
async def test_the_turn_deadline_holds_even_when_the_client_stops_reading(
    live_gateway: LiveGateway,
) -> None:
    slow(live_gateway.fake, 0.1)  # 100 chunks x 100 ms: far past the 1 s deadline
    async with httpx.AsyncClient(base_url=live_gateway.url, timeout=30) as client:
        await new_session(client)
        async with client.stream("POST", "/api/chat/stream", json={"message": "go"}) as r:
            frames = frames_of(r)
            start = await anext(frames)
            conversation = start["conversation_id"]

            async def ended() -> bool:  # read from the database while this client reads nothing
                rows = await live_gateway.messages(conversation)
                return rows[-1][1] != "streaming"

            await wait_until(ended, timeout=10)
            rest = [f async for f in frames]
    (_, status, content) = (await live_gateway.messages(conversation))[-1]
    assert status == "error" and 0 < len(content) < len(SLOW)
    assert rest[-1]["type"] == "error" and rest[-1]["code"] == "upstream_timeout"


@pytest.mark.redis
async def test_a_turn_runs_three_statements_and_no_transaction_on_postgresql(
    database_url: str,
    redis_space: RedisSpace,
    fake_openai_server: tuple[FakeOpenAI, str],
    fake_openai: FakeOpenAI,
) -> None:
    """On PostgreSQL a turn is three statements, none in a transaction of its own: the
    session lookup, the opening (allocate, insert, read the context: one statement of
    CTEs) and the finish. On SQLite the opening is three statements in a transaction,
    the context read first, before the writer lock is taken.
    (With Redis the session's lock and admission are not in the database.)"""
    transactions: list[str] = []
    statements: list[str] = []

    def on_begin(conn: Any) -> None:
        if conn.get_execution_options().get("isolation_level") != "AUTOCOMMIT":
            transactions.append("begin")

    def on_statement(*args: Any) -> None:
        statements.append(" ".join(args[2].split()[:3]))

    async with (
        running_gateway(
            database_url,
            fake_openai_server[1],
            redis_url=redis_space.url,
            redis_prefix=redis_space.prefix,
        ) as gateway,
        gateway.client() as client,
    ):
        engine = gateway.state.engine.sync_engine
        first = await client.post("/api/chat", json={"message": "first"})
        assert first.status_code == 200
        conversation_id = first.json()["conversation_id"]
        event.listen(engine, "begin", on_begin)
        event.listen(engine, "before_cursor_execute", on_statement)
        try:
            r = await client.post(
                "/api/chat", json={"message": "second", "conversation_id": conversation_id}
            )
        finally:
            event.remove(engine, "begin", on_begin)
            event.remove(engine, "before_cursor_execute", on_statement)
        postgres = engine.dialect.name == "postgresql"
    assert r.status_code == 200 and r.json()["message"] == "Echo: second"
    if postgres:
        assert [s.split()[0] for s in statements] == ["SELECT", "WITH", "UPDATE"]
        assert transactions == []
    else:
        opening = ["SELECT", "UPDATE", "INSERT"]  # the context read before the first write
        assert [s.split()[0] for s in statements] == ["SELECT", *opening, "UPDATE"]
        # SQLite counts its session read as a transaction (pysqlite opens none in the file).
        assert len(transactions) == 3


@pytest.mark.parametrize("history_messages", [1, 4])
async def test_the_context_sent_is_the_newest_usable_messages_ending_with_the_new_one(
    database_url: str,
    fake_openai_server: tuple[FakeOpenAI, str],
    fake_openai: FakeOpenAI,
    history_messages: int,
) -> None:
    """``SESSIONGATE_HISTORY_MESSAGES`` through the wire, on both databases (PostgreSQL
    opens the turn in one statement, SQLite reads the context before its first write):
    the newest messages, oldest first, a failed reply left out, the new message last."""
    async with (
        running_gateway(
            database_url, fake_openai_server[1], history_messages=history_messages
        ) as gateway,
        gateway.client() as client,
    ):
        first = await client.post("/api/chat", json={"message": "one"})
        conversation = {"conversation_id": first.json()["conversation_id"]}
        fake_openai.behaviour.fail_status = 503
        await client.post("/api/chat", json={"message": "two", **conversation})
        fake_openai.behaviour.fail_status = None
        await client.post("/api/chat", json={"message": "three", **conversation})
        last = await client.post("/api/chat", json={"message": "four", **conversation})
    assert last.status_code == 200
    sent = [(m["role"], m["content"]) for m in fake_openai.requests[-1].messages]
    stored = [
        ("user", "one"),
        ("assistant", "Echo: one"),
        ("user", "two"),  # its failed reply is never context
        ("user", "three"),
        ("assistant", "Echo: three"),
        ("user", "four"),
    ]
    assert [m for m in sent if m[0] != "system"] == stored[-history_messages:]
