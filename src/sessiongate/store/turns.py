"""The rows of a turn: opened in one transaction, the reply saved as it grows and
finished in one statement. Every query is keyed by ``session_id``. The turn's own
functions take an ORM session or a plain connection (``ChatService`` uses connections:
no unit of work is needed for Core statements, and it costs CPU on every turn).

A turn's first transaction reads the context newest-first, at most ``history_limit``
messages (before its first write, so on SQLite the read stays outside the writer
lock), takes the conversation's next positions (one UPDATE ... RETURNING) and inserts
the user message and the reply's row (``status="streaming"``) together; its cost does
not grow with the conversation. On PostgreSQL the common case is one statement of
data-modifying CTEs instead (``open_turn_at_once``). Because the reply's row exists
before the provider is called, a crash leaves it behind (marked ``interrupted`` by the
recovery sweep), never a user message without its reply.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, NamedTuple, cast

from sqlalchemy import (
    Boolean,
    Integer,
    String,
    Table,
    bindparam,
    delete,
    func,
    insert,
    literal,
    select,
    true,
    union_all,
    update,
)
from sqlalchemy import cast as sql_cast

from ..errors import BadRequest, NotFound
from .database import DbConnection, DbSession
from .models import ConversationRow, MessageRow, SessionRow, UTCDateTime, new_id, utcnow
from .queries import title_from, touch_session

STREAMING = "streaming"
_MESSAGES = cast(Table, MessageRow.__table__)
_CONVERSATIONS = cast(Table, ConversationRow.__table__)
_M = _MESSAGES.c
_C = _CONVERSATIONS.c

# The statements every turn runs, built once with bound parameters: Core on the tables
# (not the ORM entities, whose bulk-update path evaluates every UPDATE against the
# session), so an execution skips building, coercing and the ORM plugin. Measured on
# this project's machine: ~420 µs of CPU per one-statement transaction instead of ~840.
# Parameter names start with ``p_``: SQLAlchemy reserves column names in UPDATEs.
_INSERT_MESSAGES = insert(_MESSAGES)


def _allocate_statement(*, with_title: bool) -> Any:
    values: dict[str, Any] = {
        "next_position": _C.next_position + bindparam("p_count"),
        "updated_at": bindparam("p_now"),
    }
    if with_title:
        values["title"] = func.coalesce(_C.title, bindparam("p_title", type_=String()))
    return (
        update(_CONVERSATIONS)
        .where(_C.id == bindparam("p_conversation_id"), _C.session_id == bindparam("p_session_id"))
        .values(**values)
        .returning(_C.next_position, _C.upstream_conversation_id)
    )


_ALLOCATE = _allocate_statement(with_title=False)
_ALLOCATE_TITLED = _allocate_statement(with_title=True)
_STREAMING_REPLY = (
    _M.id == bindparam("p_reply_id"),
    _M.session_id == bindparam("p_session_id"),
    _M.status == STREAMING,
)
# A message of the conversation that goes into a turn's context: not a failed reply,
# not one still streaming, not empty.
_USABLE = (
    _M.session_id == bindparam("p_session_id"),
    _M.conversation_id == bindparam("p_conversation_id"),
    _M.status.not_in(("error", STREAMING)),
    _M.content != "",
)
_CONTEXT = (
    select(_M.role, _M.content)
    .where(*_USABLE, _M.position < bindparam("p_before"))
    .order_by(_M.position.desc())
    .limit(bindparam("p_limit", type_=Integer))
)
_FINISH = (
    update(_MESSAGES)
    .where(*_STREAMING_REPLY)
    .values(
        content=bindparam("p_content"),
        status=bindparam("p_status"),
        finish_reason=bindparam("p_finish_reason"),
        error_code=bindparam("p_error_code"),
        upstream_logid=bindparam("p_upstream_logid"),
        prompt_tokens=bindparam("p_prompt_tokens"),
        completion_tokens=bindparam("p_completion_tokens"),
    )
)
_BIND_UPSTREAM = (
    update(_CONVERSATIONS)
    .where(_C.id == bindparam("p_conversation_id"), _C.session_id == bindparam("p_session_id"))
    .values(upstream_conversation_id=bindparam("p_upstream_ref"))
)
_SAVE_PROGRESS = (
    update(_MESSAGES)
    .where(*_STREAMING_REPLY)
    .values(content=bindparam("p_content"))
    .returning(_M.stop_requested)
)
_STOP_REQUESTED = select(_M.stop_requested).where(*_STREAMING_REPLY)
_SESSIONS = cast(Table, SessionRow.__table__)


def _open_statement(*, touch: bool) -> Any:
    """PostgreSQL: a turn's opening (``open_turn`` for a message that continues a named
    conversation) as one statement, data-modifying CTEs: take the next two positions,
    insert the user message and the reply's row at them, push the session's expiry out
    (``touch``), and read the context older than the user message, newest first. The
    main query sees the snapshot before the CTEs' writes (PostgreSQL's rule), so the
    context leaves the new user message out; ``open_turn_at_once`` appends it. No row
    back: no such conversation in the session (and nothing was written)."""
    alloc = _allocate_statement(with_title=True).cte("alloc")
    now = bindparam("p_now", type_=UTCDateTime())

    def row(id_param: str, back: int, role: str, content: Any, status: str) -> Any:
        return select(
            bindparam(id_param, type_=String()),
            bindparam("p_session_id", type_=String()),
            bindparam("p_conversation_id", type_=String()),
            alloc.c.next_position - back,
            literal(role, String()),
            content,
            literal(status, String()),
            sql_cast(now, UTCDateTime()),  # typed in a UNION's select list, bound or literal
            literal(False, Boolean()),
        ).select_from(alloc)

    columns = [
        "id",
        "session_id",
        "conversation_id",
        "position",
        "role",
        "content",
        "status",
        "created_at",
        "stop_requested",
    ]
    rows = union_all(
        row("p_user_id", 1, "user", bindparam("p_text", type_=String()), "complete"),
        row("p_reply_id", 0, "assistant", literal("", String()), STREAMING),
    )
    inserted = insert(_MESSAGES).from_select(columns, rows).cte("inserted")
    older = (
        select(_M.position, _M.role, _M.content)
        .where(*_USABLE, _M.position < alloc.c.next_position - 1)
        .order_by(_M.position.desc())
        .limit(bindparam("p_limit", type_=Integer))
        .lateral("older")
    )
    statement = (
        select(
            alloc.c.next_position, alloc.c.upstream_conversation_id, older.c.role, older.c.content
        )
        .select_from(alloc.outerjoin(older, true()))
        .order_by(older.c.position.desc())
        .add_cte(inserted)
    )
    if touch:
        statement = statement.add_cte(
            update(_SESSIONS)
            .where(
                _SESSIONS.c.id == bindparam("p_session_id"), select(alloc.c.next_position).exists()
            )
            .values(last_active_at=now, expires_at=bindparam("p_expires_at"))
            .cte("touched")
        )
    return statement


_OPEN = {touch: _open_statement(touch=touch) for touch in (False, True)}


class ContextMessage(NamedTuple):
    """One stored message as the provider's context gets it."""

    role: str
    content: str


@dataclass(frozen=True, slots=True)
class OpenedTurn:
    """What a turn's first transaction created and read.

    ``history``: the context messages, oldest first, ending with the user message this
    turn answers (error replies and empty texts left out).
    """

    conversation_id: str
    upstream_ref: str | None
    reply_id: str
    history: Sequence[ContextMessage]


async def open_turn(
    db: DbSession | DbConnection,
    session_id: str,
    *,
    text: str | None,
    conversation_id: str | None,
    new_conversation: bool = False,
    regenerate: bool = False,
    edit_last: bool = False,
    history_limit: int,
    touch_ttl: int | None = None,
    now: datetime | None = None,
) -> OpenedTurn:
    """Store the user message (unless ``regenerate``) and the reply's streaming row.

    Without ``conversation_id`` the most recently active conversation continues, or a
    new one starts (always with ``new_conversation``). ``regenerate`` drops the
    replies after the last user message and answers it again; ``edit_last`` replaces
    the last user message with ``text``. ``touch_ttl`` (seconds) also pushes the
    session's expiry out. Raises ``NotFound`` (the conversation is not the session's,
    or was deleted) and ``BadRequest`` (``nothing_to_regenerate``).
    """
    now = now or utcnow()
    title = title_from(text) if text else None
    if conversation_id is None and not new_conversation:
        conversation_id = await db.scalar(
            select(ConversationRow.id)
            .where(ConversationRow.session_id == session_id)
            .order_by(ConversationRow.updated_at.desc(), ConversationRow.created_at.desc())
            .limit(1)
        )
    if conversation_id is None:
        conversation_id = new_id()
        await db.execute(
            insert(_CONVERSATIONS).values(
                id=conversation_id,
                session_id=session_id,
                title=title,
                created_at=now,
                updated_at=now,
                next_position=2,
            )
        )
        assert text is not None
        user = _message(session_id, conversation_id, 1, "user", text, now)
        reply = _message(session_id, conversation_id, 2, "assistant", "", now, status=STREAMING)
        await db.execute(_INSERT_MESSAGES, [user, reply])
        if touch_ttl is not None:
            await touch_session(db, session_id, idle_ttl=touch_ttl, now=now)
        return OpenedTurn(conversation_id, None, reply["id"], [ContextMessage("user", text)])

    if regenerate or edit_last:
        last_user = await db.scalar(
            select(_M.position)
            .where(
                _M.session_id == session_id,
                _M.conversation_id == conversation_id,
                _M.role == "user",
            )
            .order_by(_M.position.desc())
            .limit(1)
        )
        if last_user is None:
            await _allocate(db, session_id, conversation_id, 0, None, now)  # NotFound first
            raise BadRequest(
                "This conversation has no message to answer again.", code="nothing_to_regenerate"
            )
        cut = last_user if edit_last else last_user + 1
        await db.execute(
            delete(MessageRow).where(
                MessageRow.session_id == session_id,
                MessageRow.conversation_id == conversation_id,
                MessageRow.position >= cut,
            )
        )
    count = 1 if regenerate else 2
    older: Sequence[Any] = ()
    if not (regenerate or edit_last):
        # Read before the first write: on SQLite that keeps the read out of the writer
        # lock's hold (the session's lock keeps this conversation still meanwhile).
        older = await _read_context(db, session_id, conversation_id, _ALL, history_limit - 1)
    first, upstream_ref = await _allocate(db, session_id, conversation_id, count, title, now)
    rows: list[dict[str, Any]] = []
    if not regenerate:
        assert text is not None
        rows.append(_message(session_id, conversation_id, first, "user", text, now))
    reply = _message(
        session_id, conversation_id, first + count - 1, "assistant", "", now, status=STREAMING
    )
    rows.append(reply)
    await db.execute(_INSERT_MESSAGES, rows)
    if touch_ttl is not None:
        await touch_session(db, session_id, idle_ttl=touch_ttl, now=now)
    if regenerate or edit_last:
        history = await _read_context(
            db, session_id, conversation_id, reply["position"], history_limit
        )
    else:
        assert text is not None
        history = [("user", text), *older] if history_limit > 0 else []
    context = [ContextMessage(role, content) for role, content in reversed(history)]
    return OpenedTurn(conversation_id, upstream_ref, reply["id"], context)


_ALL = 2**31 - 1  # a position past every stored one (positions are INTEGER)


async def _read_context(
    db: DbSession | DbConnection, session_id: str, conversation_id: str, before: int, limit: int
) -> Sequence[Any]:
    """(role, content) of the conversation's last ``limit`` usable messages before
    position ``before``, newest first (``_CONTEXT``)."""
    if limit <= 0:
        return []
    params = {
        "p_session_id": session_id,
        "p_conversation_id": conversation_id,
        "p_before": before,
        "p_limit": limit,
    }
    return (await db.execute(_CONTEXT, params)).all()


async def open_turn_at_once(
    db: DbConnection,
    session_id: str,
    *,
    text: str,
    conversation_id: str,
    history_limit: int,
    touch_ttl: int | None = None,
    now: datetime | None = None,
) -> OpenedTurn:
    """``open_turn`` for the common case (a new user message in a named conversation) on
    PostgreSQL, in one statement (``_open_statement``): one round trip instead of five
    (BEGIN, allocate, insert, context, COMMIT) when ``db`` is in autocommit. Same rows,
    same result, same ``NotFound``. The context is read in the statement's snapshot,
    before this turn's rows exist: this relies on the session's lock, which every
    writer of a conversation's messages holds (turns, deletes, resets), so nothing else
    writes the conversation in between; were the lock to lapse, a writer the UPDATE
    waited for would have its messages missing from this one turn's context."""
    now = now or utcnow()
    user_id, reply_id = new_id(), new_id()
    params: dict[str, Any] = {
        "p_conversation_id": conversation_id,
        "p_session_id": session_id,
        "p_count": 2,
        "p_now": now,
        "p_title": title_from(text),
        "p_text": text,
        "p_user_id": user_id,
        "p_reply_id": reply_id,
        "p_limit": max(history_limit - 1, 0),
    }
    if touch_ttl is not None:
        params["p_expires_at"] = now + timedelta(seconds=touch_ttl)
    rows = (await db.execute(_OPEN[touch_ttl is not None], params)).all()
    if not rows:
        raise NotFound("No such conversation.", code="conversation_not_found")
    older = [ContextMessage(role, content) for _, _, role, content in rows if role is not None]
    context = [*reversed(older), ContextMessage("user", text)] if history_limit > 0 else []
    return OpenedTurn(conversation_id, rows[0][1], reply_id, context)


def context_query(session_id: str, conversation_id: str, *, before: int, limit: int) -> Any:
    """The statement ``open_turn`` runs for the context (``_CONTEXT``), with its values
    bound (for the plan test): (role, content) of the conversation's last ``limit``
    usable messages before position ``before``, newest first.

    Its cost does not grow with the conversation: both databases walk the unique
    (conversation_id, position) index backwards and stop after ``limit`` rows
    (tests/store/test_context_query.py checks the plans).
    """
    return _CONTEXT.params(
        p_session_id=session_id, p_conversation_id=conversation_id, p_before=before, p_limit=limit
    )


async def _allocate(
    db: DbSession | DbConnection,
    session_id: str,
    conversation_id: str,
    count: int,
    title: str | None,
    now: datetime,
) -> tuple[int, str | None]:
    params: dict[str, Any] = {
        "p_conversation_id": conversation_id,
        "p_session_id": session_id,
        "p_count": count,
        "p_now": now,
    }
    if title is not None:
        params["p_title"] = title
    statement = _ALLOCATE if title is None else _ALLOCATE_TITLED
    found = (await db.execute(statement, params)).first()
    if found is None:
        raise NotFound("No such conversation.", code="conversation_not_found")
    return int(found[0]) - count + 1, found[1]


def _message(
    session_id: str,
    conversation_id: str,
    position: int,
    role: str,
    content: str,
    now: datetime,
    *,
    status: str = "complete",
) -> dict[str, Any]:
    # Plain Core rows: the ORM's unit of work cost more CPU than the rest of the turn's SQL.
    return {
        "id": new_id(),
        "session_id": session_id,
        "conversation_id": conversation_id,
        "position": position,
        "role": role,
        "content": content,
        "status": status,
        "created_at": now,
        "stop_requested": False,
    }


async def save_progress(
    db: DbSession | DbConnection, session_id: str, reply_id: str, content: str
) -> bool | None:
    """Save a streaming reply's text so far; returns whether a stop was requested, or
    None if the reply is no longer streaming (marked interrupted meanwhile)."""
    params = {"p_reply_id": reply_id, "p_session_id": session_id, "p_content": content}
    flag = (await db.execute(_SAVE_PROGRESS, params)).scalar()
    return None if flag is None else bool(flag)


async def stop_requested(
    db: DbSession | DbConnection, session_id: str, reply_id: str
) -> bool | None:
    """Whether a stop was requested for the streaming reply (None: not streaming)."""
    params = {"p_reply_id": reply_id, "p_session_id": session_id}
    flag = (await db.execute(_STOP_REQUESTED, params)).scalar()
    return None if flag is None else bool(flag)


async def finish_reply(
    db: DbSession | DbConnection,
    session_id: str,
    reply_id: str,
    *,
    content: str,
    status: str,
    finish_reason: str | None = None,
    error_code: str | None = None,
    upstream_logid: str | None = None,
    prompt_tokens: int | None = None,
    completion_tokens: int | None = None,
    upstream_ref: str | None = None,
    conversation_id: str | None = None,
) -> bool:
    """Store the reply's final text and status; False if it was no longer streaming.

    ``upstream_ref`` with ``conversation_id`` also binds the provider's conversation id.
    """
    result: Any = await db.execute(
        _FINISH,
        {
            "p_reply_id": reply_id,
            "p_session_id": session_id,
            "p_content": content,
            "p_status": status,
            "p_finish_reason": finish_reason,
            "p_error_code": error_code,
            "p_upstream_logid": upstream_logid,
            "p_prompt_tokens": prompt_tokens,
            "p_completion_tokens": completion_tokens,
        },
    )
    if upstream_ref is not None and conversation_id is not None:
        await db.execute(
            _BIND_UPSTREAM,
            {
                "p_conversation_id": conversation_id,
                "p_session_id": session_id,
                "p_upstream_ref": upstream_ref,
            },
        )
    return bool(result.rowcount == 1)


async def streaming_reply(
    db: DbSession, session_id: str, conversation_id: str
) -> MessageRow | None:
    """The conversation's reply in progress, if any. Raises ``NotFound`` if the
    conversation is not the session's."""
    exists = await db.scalar(
        select(ConversationRow.id).where(
            ConversationRow.id == conversation_id, ConversationRow.session_id == session_id
        )
    )
    if exists is None:
        raise NotFound("No such conversation.", code="conversation_not_found")
    return await db.scalar(
        select(MessageRow)
        .where(
            MessageRow.session_id == session_id,
            MessageRow.conversation_id == conversation_id,
            MessageRow.status == STREAMING,
        )
        .order_by(MessageRow.position.desc())
        .limit(1)
    )


async def reply_state(db: DbSession, session_id: str, reply_id: str) -> MessageRow | None:
    """The reply's row, fresh from the database (for followers on other processes)."""
    return await db.scalar(
        select(MessageRow)
        .where(MessageRow.id == reply_id, MessageRow.session_id == session_id)
        .execution_options(populate_existing=True)
    )


async def request_stop(db: DbSession, session_id: str, reply_id: str) -> bool:
    """Flag a streaming reply to stop; the process running it reads the flag."""
    result: Any = await db.execute(
        update(_MESSAGES).where(*_STREAMING_REPLY).values(stop_requested=True),
        {"p_reply_id": reply_id, "p_session_id": session_id},
    )
    return bool(result.rowcount == 1)


async def streaming_replies(db: DbSession, *, limit: int = 500) -> Sequence[tuple[str, str]]:
    """(message id, session id) of replies marked streaming, for the recovery sweep."""
    rows = await db.execute(
        select(MessageRow.id, MessageRow.session_id)
        .where(MessageRow.status == STREAMING)
        .limit(limit)
    )
    return [(r[0], r[1]) for r in rows.all()]


async def mark_interrupted(db: DbSession, session_id: str, reply_id: str) -> bool:
    """Mark a reply whose process died ``interrupted`` (its saved text is kept)."""
    result: Any = await db.execute(
        update(_MESSAGES)
        .where(*_STREAMING_REPLY)
        .values(status="interrupted", error_code="interrupted"),
        {"p_reply_id": reply_id, "p_session_id": session_id},
    )
    return bool(result.rowcount == 1)


async def messages_before(
    db: DbSession,
    session_id: str,
    conversation_id: str,
    *,
    before: str | None,
    limit: int,
) -> tuple[Sequence[MessageRow], bool]:
    """The newest ``limit`` messages older than message ``before`` (or the newest), oldest
    first, and whether older ones exist. Raises ``NotFound`` for a conversation or
    ``before`` message that is not the session's."""
    exists = await db.scalar(
        select(ConversationRow.id).where(
            ConversationRow.id == conversation_id, ConversationRow.session_id == session_id
        )
    )
    if exists is None:
        raise NotFound("No such conversation.", code="conversation_not_found")
    where = [MessageRow.session_id == session_id, MessageRow.conversation_id == conversation_id]
    if before is not None:
        position = await db.scalar(
            select(MessageRow.position).where(*where, MessageRow.id == before)
        )
        if position is None:
            raise NotFound("No such message in this conversation.", code="message_not_found")
        where.append(MessageRow.position < position)
    rows = (
        await db.scalars(
            select(MessageRow).where(*where).order_by(MessageRow.position.desc()).limit(limit + 1)
        )
    ).all()
    return list(reversed(rows[:limit])), len(rows) > limit


__all__ = [
    "STREAMING",
    "OpenedTurn",
    "finish_reply",
    "mark_interrupted",
    "messages_before",
    "open_turn",
    "reply_state",
    "request_stop",
    "save_progress",
    "stop_requested",
    "streaming_replies",
    "streaming_reply",
]
