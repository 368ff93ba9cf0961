"""Session lifecycle with a clock we control: expiry, cleanup (also two at once on one
database), export and erasure, rate limits."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select

from sessiongate.sessions import acquire_lease, cleanup_expired_sessions
from sessiongate.store import (
    ConversationRow,
    MessageRow,
    SessionRow,
    create_engine,
    create_sessionmaker,
    migrate,
)
from sessiongate.store import queries as q

from .conftest import Gateway, running_gateway
from .fakes.openai_server import FakeOpenAI

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
TTL = 3600


@pytest.fixture
async def maker(database_url: str):  # noqa: ANN201
    await migrate(database_url)
    engine = create_engine(database_url)
    yield create_sessionmaker(engine)
    await engine.dispose()


async def seed(maker, n: int, *, at: datetime, messages: int = 2) -> list[str]:  # noqa: ANN001
    ids = []
    async with maker() as db, db.begin():
        for _ in range(n):
            s = await q.create_session(db, idle_ttl=TTL, now=at)
            conv = await q.create_conversation(db, s.id, now=at)
            for i in range(messages):
                await q.append_message(db, conv, role="user", content=f"{s.id}-{i}", now=at)
            ids.append(s.id)
    return ids


async def counts(maker) -> tuple[int, int, int]:  # noqa: ANN001
    async with maker() as db:
        return (
            await db.scalar(select(func.count()).select_from(SessionRow)),
            await db.scalar(select(func.count()).select_from(ConversationRow)),
            await db.scalar(select(func.count()).select_from(MessageRow)),
        )


async def test_session_expires_exactly_after_the_idle_ttl(maker) -> None:  # noqa: ANN001
    await seed(maker, 1, at=T0)
    just_before = await cleanup_expired_sessions(maker, now=T0 + timedelta(seconds=TTL - 1))
    assert just_before.sessions == 0 and await counts(maker) == (1, 1, 2)
    at_expiry = await cleanup_expired_sessions(maker, now=T0 + timedelta(seconds=TTL))
    assert (at_expiry.sessions, at_expiry.conversations, at_expiry.messages) == (1, 1, 2)
    assert await counts(maker) == (0, 0, 0)


async def test_a_turn_moves_expiry_forward(maker) -> None:  # noqa: ANN001
    (sid,) = await seed(maker, 1, at=T0)
    async with maker() as db, db.begin():
        await q.touch_session(db, sid, idle_ttl=TTL, now=T0 + timedelta(minutes=50))
    result = await cleanup_expired_sessions(maker, now=T0 + timedelta(seconds=TTL + 60))
    assert result.sessions == 0


async def test_cleanup_deletes_exactly_the_expired_sessions_in_batches(maker) -> None:  # noqa: ANN001
    expired = await seed(maker, 23, at=T0)
    live = await seed(maker, 7, at=T0 + timedelta(hours=5))
    seen: list[int] = []
    names: list[str] = []
    result = await cleanup_expired_sessions(
        maker, batch_size=5, now=T0 + timedelta(hours=2), progress=seen.append, forget=names.extend
    )
    assert (result.sessions, result.conversations, result.messages) == (23, 23, 46)
    assert seen == [5, 10, 15, 20, 23]
    assert len(names) == 23
    async with maker() as db:
        left = set((await db.scalars(select(SessionRow.id))).all())
        owners = set((await db.scalars(select(MessageRow.session_id))).all())
    assert left == set(live) == owners
    assert not left & set(expired)


@pytest.mark.postgres
async def test_two_cleanups_at_once_on_postgres_neither_double_delete_nor_deadlock(
    postgres_url: str,
) -> None:
    # Two engines = two gateway processes' connection pools on one PostgreSQL.
    await migrate(postgres_url)
    engines = [create_engine(postgres_url), create_engine(postgres_url)]
    makers = [create_sessionmaker(e) for e in engines]
    await seed(makers[0], 300, at=T0, messages=1)
    await seed(makers[0], 10, at=T0 + timedelta(hours=5), messages=1)
    now = T0 + timedelta(hours=2)
    results = await asyncio.wait_for(
        asyncio.gather(*(cleanup_expired_sessions(m, batch_size=50, now=now) for m in makers)),
        timeout=60,
    )
    assert sum(r.sessions for r in results) == 300
    # The lease let exactly one of them work; the other was told so and deleted nothing.
    assert sorted((r.skipped, r.sessions) for r in results) == [(False, 300), (True, 0)]
    assert await counts(makers[0]) == (10, 10, 10)
    for e in engines:
        await e.dispose()


async def test_lease_is_exclusive_until_it_expires(maker) -> None:  # noqa: ANN001
    assert await acquire_lease(maker, "job", "a", seconds=60, now=T0)
    assert not await acquire_lease(maker, "job", "b", seconds=60, now=T0 + timedelta(seconds=30))
    assert await acquire_lease(maker, "job", "b", seconds=60, now=T0 + timedelta(seconds=61))


async def test_export_returns_exactly_the_callers_data(
    gateway: Gateway, fake_openai: FakeOpenAI
) -> None:
    async with gateway.client() as a, gateway.client() as b:
        await a.post("/api/chat", json={"message": "A one"})
        await a.post("/api/conversations", json={"title": "second"})
        await a.post("/api/chat", json={"message": "A two"})
        await b.post("/api/chat", json={"message": "B only"})
        exported = (await a.get("/api/session/export")).json()
    contents = sorted(m["content"] for c in exported["conversations"] for m in c["messages"])
    assert contents == ["A one", "A two", "Echo: A one", "Echo: A two"]
    assert exported["session"]["session_id"] and "B only" not in str(exported)


async def test_erase_leaves_nothing_of_the_session(
    gateway: Gateway, fake_openai: FakeOpenAI
) -> None:
    async with gateway.client() as a, gateway.client() as b:
        await a.post("/api/chat", json={"message": "forget me"})
        await b.post("/api/chat", json={"message": "keep me"})
        sid = (await a.get("/api/session/info")).json()["session_id"]
        old_token = a.cookies["sessiongate_session"]
        erased = await a.delete("/api/session")
        assert erased.status_code == 204
        assert "sessiongate_session=" in erased.headers["set-cookie"]
        assert "sessiongate_session" not in a.cookies  # the browser drops the cookie
        again = await a.get("/api/session/info", headers={"Authorization": f"Bearer {old_token}"})
        assert again.status_code == 401  # the erased session's token stops working
        assert again.json()["error"]["code"] == "session_not_found"
    async with gateway.state.sessionmaker() as db:
        assert await db.get(SessionRow, sid) is None
        assert await db.scalar(select(func.count()).where(ConversationRow.session_id == sid)) == 0
        assert await db.scalar(select(func.count()).where(MessageRow.session_id == sid)) == 0
        remaining = (await db.scalars(select(MessageRow.content))).all()
    assert "keep me" in remaining and "forget me" not in remaining


async def test_the_n_plus_first_turn_is_429_and_other_sessions_are_unaffected(
    sqlite_url: str, fake_openai_server: tuple[FakeOpenAI, str], fake_openai: FakeOpenAI
) -> None:
    async with (
        running_gateway(sqlite_url, fake_openai_server[1], rate_limit="3/minute") as gw,
        gw.client() as a,
        gw.client() as b,
    ):
        for i in range(3):
            assert (await a.post("/api/chat", json={"message": f"m{i}"})).status_code == 200
        over = await a.post("/api/chat", json={"message": "one too many"})
        assert over.status_code == 429
        assert over.json()["error"]["code"] == "rate_limited"
        assert 1 <= int(over.headers["retry-after"]) <= 60
        assert (await b.post("/api/chat", json={"message": "fine"})).status_code == 200
        info = (await a.get("/api/session/info")).json()
    assert info["message_count"] == 6  # the refused turn stored nothing
