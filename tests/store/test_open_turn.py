"""PostgreSQL's one-statement opening of a turn (``turns.open_turn_at_once``) against the
transaction it replaces (``turns.open_turn``): the same rows, the same context, the same
refusal with nothing written; and its context read walks the index as the other does."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select, text
from sqlalchemy.dialects import postgresql

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
from sessiongate.store import turns as t
from sessiongate.store.models import new_id, utcnow

from .test_context_query import _long_conversation, index_scan_stops_at_the_limit

pytestmark = pytest.mark.postgres

HISTORY = [
    ("user", "complete", "one"),
    ("assistant", "complete", "two"),
    ("user", "complete", "three"),
    ("assistant", "error", "failed reply"),  # never context
    ("user", "complete", "four"),
    ("assistant", "complete", ""),  # empty: never context
    ("user", "complete", "five"),
    ("assistant", "complete", "six"),
]


async def _conversation(db: Any, session_id: str, now: Any) -> str:
    conversation_id = new_id()
    db.add(
        ConversationRow(
            id=conversation_id,
            session_id=session_id,
            created_at=now,
            updated_at=now,
            next_position=len(HISTORY),
            upstream_conversation_id="upstream-7",
        )
    )
    await db.flush()
    for position, (role, status, content) in enumerate(HISTORY, start=1):
        db.add(
            MessageRow(
                id=new_id(),
                session_id=session_id,
                conversation_id=conversation_id,
                position=position,
                role=role,
                status=status,
                content=content,
                created_at=now,
            )
        )
    return conversation_id


async def _stored(db: Any, conversation_id: str) -> list[tuple[Any, ...]]:
    rows = await db.execute(
        select(
            MessageRow.position,
            MessageRow.role,
            MessageRow.content,
            MessageRow.status,
            MessageRow.created_at,
            MessageRow.stop_requested,
        )
        .where(MessageRow.conversation_id == conversation_id)
        .order_by(MessageRow.position)
    )
    return [tuple(row) for row in rows]


@pytest.mark.parametrize("history_limit", [1, 3, 200])
async def test_the_one_statement_opening_stores_and_reads_what_the_transaction_does(
    postgres_url: str, history_limit: int
) -> None:
    await migrate(postgres_url)
    engine = create_engine(postgres_url)
    maker = create_sessionmaker(engine)
    now = utcnow()
    try:
        async with maker() as db, db.begin():
            session = await q.create_session(db, idle_ttl=60, now=now - timedelta(hours=1))
            old, new = (
                await _conversation(db, session.id, now),
                await _conversation(db, session.id, now),
            )
        later = now + timedelta(minutes=5)
        async with engine.begin() as conn:
            by_transaction = await t.open_turn(
                conn,
                session.id,
                text="seven?",
                conversation_id=old,
                history_limit=history_limit,
                now=later,
            )
        async with read_engine(engine).connect() as conn:
            at_once = await t.open_turn_at_once(
                conn,
                session.id,
                text="seven?",
                conversation_id=new,
                history_limit=history_limit,
                touch_ttl=600,
                now=later,
            )
        async with maker() as db:
            assert await _stored(db, new) == await _stored(db, old)
            conversations = {
                row.id: row
                for row in (
                    await db.scalars(
                        select(ConversationRow).where(ConversationRow.session_id == session.id)
                    )
                ).all()
            }
            touched = await db.get(SessionRow, session.id)
            reply = await db.get(MessageRow, at_once.reply_id)
    finally:
        await engine.dispose()
    assert at_once.history == by_transaction.history
    assert at_once.history[-1] == ("user", "seven?")
    assert len(at_once.history) == min(history_limit, 7)  # 6 usable stored, and the new one
    assert at_once.upstream_ref == by_transaction.upstream_ref == "upstream-7"
    assert at_once.conversation_id == new
    assert reply is not None and reply.status == t.STREAMING and reply.position == len(HISTORY) + 2
    for field in ("title", "next_position", "updated_at", "upstream_conversation_id"):
        assert getattr(conversations[new], field) == getattr(conversations[old], field), field
    assert touched is not None
    assert (touched.last_active_at, touched.expires_at) == (later, later + timedelta(seconds=600))


async def test_a_conversation_of_another_session_is_not_found_and_nothing_is_written(
    postgres_url: str,
) -> None:
    await migrate(postgres_url)
    engine = create_engine(postgres_url)
    maker = create_sessionmaker(engine)
    now = utcnow()
    try:
        async with maker() as db, db.begin():
            owner = await q.create_session(db, idle_ttl=60, now=now)
            other = await q.create_session(db, idle_ttl=60, now=now)
            conversation_id = await _conversation(db, owner.id, now)
        async with read_engine(engine).connect() as conn:
            with pytest.raises(NotFound):
                await t.open_turn_at_once(
                    conn,
                    other.id,
                    text="let me in",
                    conversation_id=conversation_id,
                    history_limit=10,
                    touch_ttl=600,
                    now=now + timedelta(minutes=5),
                )
        async with maker() as db:
            stored = await _stored(db, conversation_id)
            conversation = await db.get(ConversationRow, conversation_id)
            intruder = await db.get(SessionRow, other.id)
    finally:
        await engine.dispose()
    assert len(stored) == len(HISTORY)
    assert conversation is not None and conversation.next_position == len(HISTORY)
    assert intruder is not None and intruder.expires_at == now + timedelta(seconds=60)


async def test_the_one_statement_opening_reads_the_context_by_the_index_and_stops_at_the_limit(
    postgres_url: str,
) -> None:
    engine, session_id, conversation_id = await _long_conversation(postgres_url)
    statement = t._OPEN[False].params(
        p_conversation_id=conversation_id,
        p_session_id=session_id,
        p_count=2,
        p_now=utcnow(),
        p_title="t",
        p_text="x",
        p_user_id=new_id(),
        p_reply_id=new_id(),
        p_limit=6,
    )
    compiled = statement.compile(
        dialect=postgresql.dialect(), compile_kwargs={"literal_binds": True}
    )
    try:
        async with engine.connect() as conn:
            transaction = await conn.begin()
            plan = "\n".join(
                str(row[0])
                for row in await conn.execute(text(f"EXPLAIN (ANALYZE, FORMAT TEXT) {compiled}"))
            )
            await transaction.rollback()  # EXPLAIN ANALYZE ran the writes
    finally:
        await engine.dispose()
    assert "Index Scan Backward using uq_messages_conversation_position" in plan, plan
    assert index_scan_stops_at_the_limit(plan), plan
