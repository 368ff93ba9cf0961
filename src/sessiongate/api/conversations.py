"""The caller's conversations: list, create, read messages, delete.

Every query is keyed by the caller's session id: another session's conversation id
answers 404 exactly like one that never existed.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Path, Query, status

from ..store import queries as q
from .deps import CurrentSession, StateDep
from .schemas import (
    Conversation,
    ConversationCreate,
    ConversationPage,
    ErrorEnvelope,
    Message,
    MessagePage,
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
    offset: Annotated[int, Query(ge=0)] = 0,
) -> MessagePage:
    """The conversation's messages, oldest first, with each reply's `status`."""
    async with state.sessionmaker() as db:
        rows, total = await q.list_messages(
            db, session.id, conversation_id, limit=limit, offset=offset
        )
    return MessagePage(
        messages=[Message.of(row) for row in rows], total=total, limit=limit, offset=offset
    )


@router.delete("/{conversation_id}", status_code=status.HTTP_204_NO_CONTENT, responses=_NOT_FOUND)
async def delete_conversation(
    conversation_id: ConversationId, session: CurrentSession, state: StateDep
) -> None:
    """Delete the conversation and all its messages (waits for a running turn in it)."""
    async with state.locks.hold(session.id), state.sessionmaker() as db, db.begin():
        await q.delete_conversation(db, session.id, conversation_id)


__all__ = ["router"]
