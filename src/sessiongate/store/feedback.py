"""Feedback: an end user's thumbs up or down on one reply, and the operator's view of it.

``rate_message`` is keyed by the caller's session like every chat query (another
session's message answers ``NotFound``); ``count_feedback`` and ``list_feedback`` read
across sessions and are reachable only through the admin API.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from sqlalchemy import func, select
from sqlalchemy.orm import aliased

from ..errors import BadRequest, NotFound
from .database import DbSession
from .models import ConversationRow, MessageRow, utcnow

Rating = Literal["up", "down"]
RATINGS: tuple[Rating, ...] = ("up", "down")


async def rate_message(
    db: DbSession,
    session_id: str,
    conversation_id: str,
    message_id: str,
    rating: Rating | None,
    *,
    now: datetime | None = None,
) -> MessageRow:
    """Store (or, with ``None``, clear) the session's rating of one reply.

    Raises ``NotFound`` (``message_not_found``) unless the message is in that conversation
    of that session, and ``BadRequest`` (``not_a_reply``) for a user message.
    """
    row = await db.scalar(
        select(MessageRow).where(
            MessageRow.id == message_id,
            MessageRow.conversation_id == conversation_id,
            MessageRow.session_id == session_id,
        )
    )
    if row is None:
        raise NotFound("No such message.", code="message_not_found")
    if row.role != "assistant":
        raise BadRequest("Only replies can be rated.", code="not_a_reply")
    row.feedback = rating
    row.feedback_at = (now or utcnow()) if rating is not None else None
    return row


async def count_feedback(db: DbSession) -> dict[str, int]:
    """Rated replies across all sessions: ``{"up": n, "down": m}`` (both keys always)."""
    rows = await db.execute(
        select(MessageRow.feedback, func.count())
        .where(MessageRow.feedback.in_(RATINGS))
        .group_by(MessageRow.feedback)
    )
    counts: dict[str, int] = dict.fromkeys(RATINGS, 0)
    for rating, n in rows.all():
        counts[str(rating)] = int(n)
    return counts


@dataclass(frozen=True, slots=True)
class RatedReply:
    """A rated reply with the user message it answered (``question``, may be None)."""

    message: MessageRow
    conversation: ConversationRow
    question: MessageRow | None


async def list_feedback(
    db: DbSession, *, rating: Rating | None, limit: int, before: datetime | None = None
) -> Sequence[RatedReply]:
    """Rated replies, most recently rated first; only ``rating`` if given.

    ``before`` pages: pass the ``feedback_at`` of the last item of the previous page.
    """
    question = aliased(MessageRow)
    # The user message each reply answered, found in the same query (one statement for
    # the page, one for the questions' rows: not one per reply).
    question_id = (
        select(question.id)
        .where(
            question.conversation_id == MessageRow.conversation_id,
            question.position < MessageRow.position,
            question.role == "user",
        )
        .order_by(question.position.desc())
        .limit(1)
        .correlate(MessageRow)
        .scalar_subquery()
    )
    query = (
        select(MessageRow, ConversationRow, question_id)
        .join(ConversationRow, ConversationRow.id == MessageRow.conversation_id)
        .where(MessageRow.feedback.in_([rating] if rating else RATINGS))
        .order_by(MessageRow.feedback_at.desc(), MessageRow.id.desc())
        .limit(limit)
    )
    if before is not None:
        query = query.where(MessageRow.feedback_at < before)
    rows = (await db.execute(query)).all()
    wanted = [qid for _, _, qid in rows if qid is not None]
    questions = (
        {
            m.id: m
            for m in (await db.scalars(select(MessageRow).where(MessageRow.id.in_(wanted)))).all()
        }
        if wanted
        else {}
    )
    return [
        RatedReply(message, conversation, questions.get(qid) if qid else None)
        for message, conversation, qid in rows
    ]


__all__ = ["RATINGS", "RatedReply", "Rating", "count_feedback", "list_feedback", "rate_message"]
