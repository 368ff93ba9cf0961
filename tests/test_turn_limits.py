"""Deadlines and bounds of a turn through the whole gateway (HTTP in, fake upstream out):
the idle deadline between chunks, context overflow, and the periodic cleanup task."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select

from sessiongate.store import SessionRow
from sessiongate.store import queries as q
from sessiongate.store.models import utcnow

from .conftest import running_gateway, wait_until
from .fakes.openai_server import FakeOpenAI


async def test_upstream_silence_past_the_idle_timeout_is_504_and_stored_as_error(
    sqlite_url: str, fake_openai_server: tuple, fake_openai: FakeOpenAI
) -> None:
    fake_openai.behaviour.chunk_delay = 2.0  # far past the idle timeout below
    fake_openai.behaviour.reply = lambda _: "slow words"
    async with (
        running_gateway(sqlite_url, fake_openai_server[1], idle_timeout=0.3) as gw,
        gw.client() as client,
    ):
        r = await client.post("/api/chat", json={"message": "are you there?"})
        assert r.status_code == 504, r.text
        assert r.json()["error"]["code"] == "upstream_timeout"
        conversations = (await client.get("/api/conversations")).json()["conversations"]
        messages = (
            await client.get(f"/api/conversations/{conversations[0]['id']}/messages")
        ).json()["messages"]
    assert [(m["role"], m["status"]) for m in messages] == [
        ("user", "complete"),
        ("assistant", "error"),
    ]
    assert messages[1]["error_code"] == "upstream_timeout"


async def test_a_message_too_long_for_the_context_window_is_413_and_never_sent_upstream(
    sqlite_url: str, fake_openai_server: tuple, fake_openai: FakeOpenAI
) -> None:
    async with (
        running_gateway(sqlite_url, fake_openai_server[1], openai_context_tokens=256) as gw,
        gw.client() as client,
    ):
        r = await client.post("/api/chat", json={"message": "word " * 600})
    assert r.status_code == 413, r.text
    assert r.json()["error"]["code"] == "context_overflow"
    assert fake_openai.requests == []


async def test_the_periodic_cleanup_deletes_expired_sessions_and_keeps_active_ones(
    sqlite_url: str, fake_openai_server: tuple, fake_openai: FakeOpenAI
) -> None:
    async with running_gateway(sqlite_url, fake_openai_server[1], cleanup_interval=1) as gw:
        async with gw.state.sessionmaker() as db, db.begin():
            expired = await q.create_session(db, idle_ttl=60, now=utcnow() - timedelta(hours=1))
            active = await q.create_session(db, idle_ttl=3600)

        async def remaining() -> set[str]:
            async with gw.state.sessionmaker() as db:
                return set((await db.scalars(select(SessionRow.id))).all())

        async def expired_is_gone() -> bool:
            return expired.id not in await remaining()

        await wait_until(expired_is_gone, timeout=15)
        assert await remaining() == {active.id}
