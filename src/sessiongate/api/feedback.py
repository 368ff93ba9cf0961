"""Feedback on replies: the end user's thumbs up or down, stored per message.

Operators see the counts in ``/api/admin/stats`` and the rated replies in
``/api/admin/feedback`` (the admin dashboard filters them by rating).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path
from pydantic import BaseModel, ConfigDict, Field

from ..store import feedback as store_feedback
from .deps import CurrentSession, JsonBody, StateDep
from .schemas import ErrorEnvelope

router = APIRouter(prefix="/api/conversations", tags=["conversations"])

Id = Annotated[str, Path(min_length=1, max_length=64)]
_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorEnvelope, "description": "`not_a_reply`: only replies can be rated."},
    404: {"model": ErrorEnvelope, "description": "No such message in your session."},
}


class FeedbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    rating: store_feedback.Rating | None = Field(
        description="`up`, `down`, or null to take a rating back."
    )


class Feedback(BaseModel):
    message_id: str
    rating: store_feedback.Rating | None


@router.post(
    "/{conversation_id}/messages/{message_id}/feedback",
    response_model=Feedback,
    responses=_ERRORS,
    dependencies=[JsonBody],
)
async def rate_reply(
    conversation_id: Id,
    message_id: Id,
    body: FeedbackRequest,
    session: CurrentSession,
    state: StateDep,
) -> Feedback:
    """Rate one of your replies `up` or `down` (or `null` to clear the rating).

    Rating again replaces the earlier rating. Another session's message answers 404.
    """
    async with state.sessionmaker() as db, db.begin():
        row = await store_feedback.rate_message(
            db, session.id, conversation_id, message_id, body.rating
        )
    return Feedback(message_id=row.id, rating=body.rating)


__all__ = ["router"]
