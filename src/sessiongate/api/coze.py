"""``POST /api/coze/token``: a Coze access token for the caller's own session.

For front ends that embed Coze's Chat SDK in the page: the SDK needs an access token,
and it must be the one whose OAuth JWT carried *this* session's ``session_name`` so
Coze isolates the user. Only under ``COZE_AUTH_MODE=OAUTH_JWT`` with a Coze provider.
"""

from __future__ import annotations

from fastapi import APIRouter, Response
from pydantic import BaseModel, Field

from ..errors import NotFound
from ..providers.base import SessionCredentials
from .deps import CurrentSession, StateDep
from .schemas import ErrorEnvelope

router = APIRouter(prefix="/api/coze", tags=["coze"])


class CozeToken(BaseModel):
    access_token: str = Field(description="Coze access token bound to this session's session_name.")
    expires_in: int = Field(description="Absolute expiry, unix seconds (Coze's own convention).")
    session_name: str = Field(description="The opaque session_name the token was issued for.")


@router.post("/token", response_model=CozeToken, responses={404: {"model": ErrorEnvelope}})
async def coze_token(session: CurrentSession, state: StateDep, response: Response) -> CozeToken:
    """Your session's Coze access token (cached and refreshed by the gateway).

    404 `coze_token_unavailable` unless the gateway runs a Coze provider under OAuth JWT.
    """
    if not isinstance(state.provider, SessionCredentials):
        raise NotFound(
            "This gateway does not issue Coze access tokens.",
            code="coze_token_unavailable",
            detail="Coze access tokens are issued only with a Coze provider under "
            "COZE_AUTH_MODE=OAUTH_JWT.",
        )
    token, expires_at = await state.provider.issue_session_token(session.session_name)
    response.headers["Cache-Control"] = "no-store"
    return CozeToken(access_token=token, expires_in=expires_at, session_name=session.session_name)


__all__ = ["router"]
