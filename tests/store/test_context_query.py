"""A turn's context read does not grow with the conversation: with 5,000 stored messages
both databases walk the (conversation_id, position) index backwards and stop at the
limit, and the read returns the newest messages, oldest first."""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy import insert, text
from sqlalchemy.dialects import postgresql, sqlite

from sessiongate.store import create_engine, create_sessionmaker, migrate
from sessiongate.store import queries as q
from sessiongate.store import turns as t
from sessiongate.store.models import ConversationRow, MessageRow, new_id, utcnow

STORED = 5000


def index_scan_stops_at_the_limit(plan: str) -> bool:
    """Whether the backward index scan of an EXPLAIN ANALYZE text plan returned 6 or 7
    rows (the limit of 6, plus the one filtered error row) out of ``STORED``: the
    scan's own line, not the Limit above it, which returns 6 whatever the scan read."""
    scans = [line for line in plan.splitlines() if "Index Scan Backward" in line]
    return len(scans) == 1 and re.search(r"actual .*rows=[67] loops=1", scans[0]) is not None


async def _long_conversation(database_url: str) -> tuple[Any, str, str]:
    await migrate(database_url)
    engine = create_engine(database_url)
    sessionmaker = create_sessionmaker(engine)
    now = utcnow()
    async with sessionmaker() as db, db.begin():
        session = await q.create_session(db, idle_ttl=3600)
        conversation_id = new_id()
        db.add(
            ConversationRow(
                id=conversation_id,
                session_id=session.id,
                created_at=now,
                updated_at=now,
                next_position=STORED,
            )
        )
        await db.flush()
        rows = [
            {
                "id": new_id(),
                "session_id": session.id,
                "conversation_id": conversation_id,
                "position": i + 1,
                "role": "user" if i % 2 == 0 else "assistant",
                "content": f"m{i + 1}",
                "status": "error" if i + 1 == STORED - 2 else "complete",
                "created_at": now,
                "stop_requested": False,
            }
            for i in range(STORED)
        ]
        await db.execute(insert(MessageRow), rows)
    async with engine.begin() as conn:
        await conn.execute(text("ANALYZE"))
    return engine, session.id, conversation_id


async def test_the_context_read_walks_the_index_backwards_and_stops_at_the_limit(
    database_url: str,
) -> None:
    engine, session_id, conversation_id = await _long_conversation(database_url)
    try:
        query = t.context_query(session_id, conversation_id, before=STORED + 1, limit=6)
        async with engine.connect() as conn:
            rows = (await conn.execute(query)).all()
            if engine.dialect.name == "sqlite":
                compiled = query.compile(
                    dialect=sqlite.dialect(), compile_kwargs={"literal_binds": True}
                )
                plan = " | ".join(
                    str(row[-1])
                    for row in await conn.execute(text(f"EXPLAIN QUERY PLAN {compiled}"))
                )
                # The unique constraint's index (SQLite names it sqlite_autoindex_...).
                assert "USING INDEX" in plan and "(conversation_id=? AND position<?)" in plan, plan
                assert "TEMP B-TREE" not in plan, plan  # no sort of the whole conversation
            else:
                compiled = query.compile(
                    dialect=postgresql.dialect(), compile_kwargs={"literal_binds": True}
                )
                plan = "\n".join(
                    str(row[0])
                    for row in await conn.execute(
                        text(f"EXPLAIN (ANALYZE, FORMAT TEXT) {compiled}")
                    )
                )
                assert "Index Scan Backward using uq_messages_conversation_position" in plan, plan
                assert "Sort" not in plan, plan
                # The scan stops after the limit (plus the one filtered error row).
                assert index_scan_stops_at_the_limit(plan), plan
    finally:
        await engine.dispose()
    # Newest first from the database; the error reply (position STORED - 2) is skipped.
    assert [content for _, content in rows] == [
        f"m{STORED}",
        f"m{STORED - 1}",
        f"m{STORED - 3}",
        f"m{STORED - 4}",
        f"m{STORED - 5}",
        f"m{STORED - 6}",
    ]
