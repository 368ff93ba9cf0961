"""The caller's conversations: list, create, rename, read messages, delete, and the
reply in progress: follow it, stop it.

Every query is keyed by the caller's session id: another session's conversation id
answers 404 exactly like one that never existed.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Path, Query, status
from starlette.responses import StreamingResponse

from ..store import queries as q
from ..store import turns as t
from .chat import EventStreamResponse, sse_frames
from .deps import CurrentSession, StateDep
from .schemas import (
    Conversation,
    ConversationCreate,
    ConversationPage,
    ConversationRename,
    ErrorEnvelope,
    Message,
    MessagePage,
    StopResult,
)

router = APIRouter(prefix="/api/conversations", tags=["conversations"])

ConversationId = Annotated[str, Path(min_length=1, max_length=64)]
_NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorEnvelope, "description": "No such conversation in your session."}
}


@router.get("", response_model=ConversationPage)
async def list_conversations(
    session: CurrentSession,
    state: StateDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> ConversationPage:
    """Your conversations, most recently active first, `limit` per page from `offset`."""
    async with state.sessionmaker() as db:
        rows, total = await q.list_conversations(db, session.id, limit=limit, offset=offset)
    return ConversationPage(
        conversations=[Conversation.of(row, n) for row, n in rows],
        total=total,
        limit=limit,
        offset=offset,
    )


@router.post("", response_model=Conversation, status_code=status.HTTP_201_CREATED)
async def create_conversation(
    session: CurrentSession,
    state: StateDep,
    body: Annotated[ConversationCreate | None, Body()] = None,
) -> Conversation:
    """Start an empty conversation; the next `POST /api/chat` without an id continues it."""
    async with state.sessionmaker() as db, db.begin():
        row = await q.create_conversation(db, session.id, title=body.title if body else None)
    return Conversation.of(row)


@router.get("/{conversation_id}/messages", response_model=MessagePage, responses=_NOT_FOUND)
async def list_messages(
    conversation_id: ConversationId,
    session: CurrentSession,
    state: StateDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    offset: Annotated[int | None, Query(ge=0, le=2**31)] = None,
    before: Annotated[str | None, Query(min_length=1, max_length=64)] = None,
) -> MessagePage:
    """The conversation's messages, oldest first, with each reply's `status`
    (`complete`, `streaming`, `incomplete`, `error`, `interrupted`).

    Two ways to page: `before=<message id>` (or neither parameter) gives the newest
    `limit` messages older than that message (or the newest overall) and `has_more`
    — the chat page's scroll-up; `offset` pages from the oldest and gives `total`.
    """
    async with state.sessionmaker() as db:
        if offset is not None:
            rows, total = await q.list_messages(
                db, session.id, conversation_id, limit=limit, offset=offset
            )
            return MessagePage(
                messages=[Message.of(row) for row in rows], total=total, limit=limit, offset=offset
            )
        page, has_more = await t.messages_before(
            db, session.id, conversation_id, before=before, limit=limit
        )
    return MessagePage(messages=[Message.of(row) for row in page], limit=limit, has_more=has_more)


@router.patch("/{conversation_id}", response_model=Conversation, responses=_NOT_FOUND)
async def rename_conversation(
    conversation_id: ConversationId,
    body: ConversationRename,
    session: CurrentSession,
    state: StateDep,
) -> Conversation:
    """Rename the conversation."""
    async with state.sessionmaker() as db, db.begin():
        row = await q.rename_conversation(db, session.id, conversation_id, body.title)
    return Conversation.of(row)


@router.delete("/{conversation_id}", status_code=status.HTTP_204_NO_CONTENT, responses=_NOT_FOUND)
async def delete_conversation(
    conversation_id: ConversationId, session: CurrentSession, state: StateDep
) -> None:
    """Delete the conversation and all its messages (waits for a running turn of the
    session, on any replica; 409 `session_busy` if it runs too long)."""
    await state.sessions.delete_conversation(session.id, conversation_id)


@router.get(
    "/{conversation_id}/reply",
    responses={200: {"content": {"text/event-stream": {}}}, **_NOT_FOUND},
)
async def follow_reply(
    conversation_id: ConversationId, session: CurrentSession, state: StateDep
) -> StreamingResponse:
    """Reattach to the reply being written in this conversation, from any replica.

    Server-Sent Events like `POST /api/chat/stream`: a `start` frame, one `message`
    frame with the text so far, then the rest live, then `done` or `error` (code
    `interrupted` if the process writing it died). 404 `reply_not_found` when no reply
    is in progress (read the messages instead).
    """
    frames = await state.chat.follower.attach(
        session.id,
        conversation_id,
        keepalive=state.settings.keepalive_interval,
        flush_interval=state.settings.stream_flush_interval,
    )
    return EventStreamResponse(sse_frames(frames))


@router.post("/{conversation_id}/stop", response_model=StopResult, responses=_NOT_FOUND)
async def stop_reply(
    conversation_id: ConversationId, session: CurrentSession, state: StateDep
) -> StopResult:
    """Stop the reply being written in this conversation, whichever replica writes it.
    The text so far is kept with status `incomplete`."""
    return StopResult(stopped=await state.chat.stop(session.id, conversation_id))


__all__ = ["router"]
