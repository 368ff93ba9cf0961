"""``GET /metrics``: Prometheus text exposition, optionally behind a bearer token."""

from __future__ import annotations

import hmac
import logging

from fastapi import APIRouter, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.core import Metric
from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError

from .. import metrics
from ..errors import AuthError
from ..identity import bearer_token
from ..store import SessionRow
from ..store.models import utcnow
from .deps import StateDep
from .errors import error_response

router = APIRouter(tags=["metrics"])
log = logging.getLogger(__name__)


def _authorized(request: Request, state: StateDep) -> bool:
    expected = state.settings.metrics_token
    if expected is None:
        return True
    try:
        presented = bearer_token(request.headers.get("authorization"))
    except AuthError:
        return False
    # Constant-time comparison: the token must not be guessable byte by byte.
    return presented is not None and hmac.compare_digest(
        presented.encode("utf-8"), expected.get_secret_value().encode("utf-8")
    )


async def _sessions_active(state: StateDep) -> list[Metric]:
    """Sessions not yet expired, counted by the database (uses the expires_at index)."""
    query = select(func.count()).select_from(SessionRow).where(SessionRow.expires_at > utcnow())
    try:
        async with state.sessionmaker() as db:
            count = await db.scalar(query)
    except (SQLAlchemyError, OSError) as exc:
        # The other metrics still matter most when the database is in trouble.
        log.warning("metrics: cannot count active sessions: %s", type(exc).__name__)
        return []
    return [metrics.sessions_active_family(count or 0)]


@router.get("/metrics", include_in_schema=False)
async def prometheus_metrics(request: Request, state: StateDep) -> Response:
    """Prometheus metrics of the gateway (all worker processes, when there are several).

    With `SESSIONGATE_METRICS_TOKEN` set, send `Authorization: Bearer <token>`; without
    it: 401 `unauthorized`.
    """
    if not _authorized(request, state):
        return error_response(
            401,
            "unauthorized",
            "A valid metrics token is required.",
            {"WWW-Authenticate": 'Bearer realm="metrics"'},
        )
    body = metrics.render(await _sessions_active(state))
    return Response(body, media_type=CONTENT_TYPE_LATEST)


__all__ = ["router"]
