"""``GET /api/health``: is the gateway able to serve (and, for admins, with what)."""

from __future__ import annotations

import logging

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy import literal, select
from sqlalchemy.exc import SQLAlchemyError

from .. import __version__
from ..errors import SessiongateError
from ..store import queries as q
from .deps import StateDep, identify_caller
from .schemas import Health, SessionCounts

router = APIRouter(prefix="/api", tags=["health"])
log = logging.getLogger(__name__)


class PublicHealth(BaseModel):
    """What anyone may know: whether the service is up."""

    status: str


@router.get(
    "/health",
    response_model=Health | PublicHealth,
    responses={503: {"model": PublicHealth}},
)
async def health(request: Request, state: StateDep) -> JSONResponse:
    """`{"status": "ok"}`, or 503 with `status: degraded` when the database is unreachable.

    Admins (admin token or an IdP admin) also get the version, provider, database
    state, session counts and turns in progress; nobody else learns what runs here.
    For everyone else the database check is one `SELECT 1` (load balancers probe this
    every few seconds, and anyone may call it): only admins pay for counting sessions.
    """
    try:
        is_admin = (await identify_caller(request, state)).is_admin
    except SessiongateError:
        is_admin = False
    counts: SessionCounts | None = None
    reachable = False
    try:
        async with state.sessionmaker() as db:
            if is_admin:
                total, active = await q.count_sessions(db)
                counts = SessionCounts(total=total, active=active)
            else:
                await db.execute(select(literal(1)))
        reachable = True
    except (SQLAlchemyError, OSError) as exc:
        log.warning("health: database unreachable: %s", type(exc).__name__)
    status = 200 if reachable else 503
    if not is_admin:
        return JSONResponse({"status": "ok" if reachable else "degraded"}, status_code=status)
    body = Health(
        status="ok" if reachable else "degraded",
        version=__version__,
        provider=state.provider.name,
        database="ok" if reachable else "unreachable",
        sessions=counts,
        turns_in_progress=state.chat.turns_in_progress,
    )
    return JSONResponse(body.model_dump(mode="json"), status_code=status)


__all__ = ["router"]
