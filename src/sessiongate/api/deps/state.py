"""The app's long-lived state, as a dependency."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from ...chat import ChatService
from ...config import Settings
from ...identity import (
    COOKIE_NAME,
    IdentityProviderVerifier,
    SessionTokens,
)
from ...providers import Provider
from ...ratelimit import ClientLimiter
from ...sessions import SessionService
from ...store import DbSession
from ..clients import Network


@dataclass(slots=True)
class GatewayState:
    """Everything long-lived, owned by the app's lifespan."""

    settings: Settings
    engine: AsyncEngine
    sessionmaker: async_sessionmaker[DbSession]
    #: ``engine`` for single reads outside a transaction (no BEGIN/ROLLBACK round trips).
    reader: AsyncEngine
    tokens: SessionTokens
    provider: Provider
    chat: ChatService
    sessions: SessionService
    idp: IdentityProviderVerifier | None = None
    clients: ClientLimiter | None = None
    trusted_proxies: tuple[Network, ...] = ()

    @property
    def cookie_name(self) -> str:
        """The session cookie's name: ``__Host-`` prefixed whenever it is ``Secure``.

        Security: browsers accept a ``__Host-`` cookie only from this exact host, over
        HTTPS, for path ``/`` and without ``Domain``, so a sibling subdomain cannot
        plant (toss) a session cookie of its choosing next to the user's.
        """
        return f"__Host-{COOKIE_NAME}" if self.settings.cookie_secure else COOKIE_NAME


def get_state(request: Request) -> GatewayState:
    state: GatewayState = request.app.state.gateway
    return state


StateDep = Annotated[GatewayState, Depends(get_state)]


__all__ = [
    "GatewayState",
    "StateDep",
    "get_state",
]
