"""The store on SQLite and PostgreSQL: migrations, session-keyed queries, cascades."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import func, inspect, select

from sessiongate.errors import NotFound
from sessiongate.store import (
    ConversationRow,
    MessageRow,
    SessionRow,
    create_engine,
    create_sessionmaker,
    migrate,
    read_engine,
)
from sessiongate.store import queries as q
from sessiongate.store.models import utcnow


@pytest.fixture
async def db(database_url: str):  # noqa: ANN201
    await migrate(database_url)
    engine = create_engine(database_url)
    maker = create_sessionmaker(engine)
    async with maker() as session:
        yield session
    await engine.dispose()


async def test_migrations_create_the_tables_and_are_idempotent(database_url: str) -> None:
    await migrate(database_url)
    await migrate(database_url)
    engine = create_engine(database_url)
    async with engine.connect() as conn:
        tables = await conn.run_sync(lambda c: set(inspect(c).get_table_names()))
    await engine.dispose()
    assert {"sessions", "conversations", "messages", "alembic_version"} <= tables


async def test_sqlite_runs_in_wal_mode(sqlite_url: str) -> None:
    from sqlalchemy import text

    engine = create_engine(sqlite_url)
    async with engine.connect() as conn:
        mode = (await conn.execute(text("PRAGMA journal_mode"))).scalar()
    await engine.dispose()
    assert mode == "wal"


async def test_queries_are_keyed_by_session(db) -> None:  # noqa: ANN001
    a = await q.create_session(db, idle_ttl=60)
    b = await q.create_session(db, idle_ttl=60)
    conv = await q.create_conversation(db, a.id)
    await q.append_message(db, conv, role="user", content="A's secret")
    await db.commit()

    with pytest.raises(NotFound):
        await q.get_conversation(db, b.id, conv.id)
    with pytest.raises(NotFound):
        await q.list_messages(db, b.id, conv.id)
    with pytest.raises(NotFound):
        await q.delete_conversation(db, b.id, conv.id)
    rows, total = await q.list_conversations(db, b.id, limit=10, offset=0)
    assert (list(rows), total) == ([], 0)
    await q.delete_all_conversations(db, b.id)
    await db.commit()
    messages, _ = await q.list_messages(db, a.id, conv.id)
    assert [m.content for m in messages] == ["A's secret"]


async def test_messages_keep_their_order_and_timestamps_are_utc(db) -> None:  # noqa: ANN001
    s = await q.create_session(db, idle_ttl=60)
    conv = await q.create_conversation(db, s.id)
    for i in range(5):
        await q.append_message(db, conv, role="user" if i % 2 == 0 else "assistant", content=str(i))
    await db.commit()
    rows, total = await q.list_messages(db, s.id, conv.id)
    assert [m.content for m in rows] == ["0", "1", "2", "3", "4"] and total == 5
    assert [m.position for m in rows] == [1, 2, 3, 4, 5]
    assert all(m.created_at.utcoffset() == timedelta(0) for m in rows)


async def test_deleting_a_session_cascades_to_its_data_only(db) -> None:  # noqa: ANN001
    a = await q.create_session(db, idle_ttl=60)
    b = await q.create_session(db, idle_ttl=60)
    for owner in (a, b):
        conv = await q.create_conversation(db, owner.id)
        await q.append_message(db, conv, role="user", content=owner.id)
    await db.commit()
    await db.delete(await db.get(SessionRow, a.id))
    await db.commit()
    assert await db.scalar(select(func.count()).select_from(ConversationRow)) == 1
    remaining = (await db.scalars(select(MessageRow))).all()
    assert [m.content for m in remaining] == [b.id]


async def test_touch_pushes_expiry_by_the_idle_ttl(db) -> None:  # noqa: ANN001
    start = utcnow() - timedelta(hours=1)
    s = await q.create_session(db, idle_ttl=60, now=start)
    assert s.expires_at == start + timedelta(seconds=60)
    later = start + timedelta(minutes=30)
    await q.touch_session(db, s.id, idle_ttl=60, now=later)
    await db.commit()
    row = await q.get_session(db, s.id)
    assert row is not None
    await db.refresh(row)
    assert row.last_active_at == later and row.expires_at == later + timedelta(seconds=60)
    total, active = await q.count_sessions(db)
    assert (total, active) == (1, 0)


async def test_session_names_are_opaque_and_unique(db) -> None:  # noqa: ANN001
    sessions = [await q.create_session(db, idle_ttl=60) for _ in range(50)]
    names = {s.session_name for s in sessions}
    assert len(names) == 50
    assert all(s.id not in s.session_name and s.session_name.startswith("sg_") for s in sessions)


async def test_find_session_reads_every_column_as_get_session_does(database_url: str) -> None:
    """The Core lookup behind every session-token request (``find_session``) and the ORM
    one agree on every column, timezone included, on both databases."""
    await migrate(database_url)
    engine = create_engine(database_url)
    try:
        async with create_sessionmaker(engine)() as db, db.begin():
            row = await q.create_session(db, idle_ttl=90)
            row.kind, row.issuer, row.external_user = "idp", "https://idp.example", "u-7"
            row.principal = "idp:https://idp.example:u-7"
        found = await q.find_session(read_engine(engine), row.id)
        assert found is not None
        columns = [c.key for c in SessionRow.__table__.columns]
        assert {c: getattr(found, c) for c in columns} == {c: getattr(row, c) for c in columns}
        assert found.expires_at.tzinfo is not None
        assert await q.find_session(read_engine(engine), "0" * 32) is None
    finally:
        await engine.dispose()
