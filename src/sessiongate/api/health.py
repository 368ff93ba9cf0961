"""``GET /api/health``: is the gateway able to serve, and with what."""

from __future__ import annotations

import logging

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy.exc import SQLAlchemyError

from .. import __version__
from ..store import queries as q
from .deps import StateDep
from .schemas import Health, SessionCounts

router = APIRouter(prefix="/api", tags=["health"])
log = logging.getLogger(__name__)


@router.get("/health", response_model=Health, responses={503: {"model": Health}})
async def health(state: StateDep) -> JSONResponse:
    """Status, version, provider, database reachability and session counts.

    Answers 503 with `status: degraded` when the database cannot be reached.
    """
    counts: SessionCounts | None = None
    try:
        async with state.sessionmaker() as db:
            total, active = await q.count_sessions(db)
        counts = SessionCounts(total=total, active=active)
    except (SQLAlchemyError, OSError) as exc:
        log.warning("health: database unreachable: %s", type(exc).__name__)
    body = Health(
        status="ok" if counts else "degraded",
        version=__version__,
        provider=state.provider.name,
        database="ok" if counts else "unreachable",
        sessions=counts,
        turns_in_progress=state.chat.turns_in_progress,
    )
    return JSONResponse(body.model_dump(mode="json"), status_code=200 if counts else 503)


__all__ = ["router"]
