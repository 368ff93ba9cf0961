"""The application factory; its lifespan owns every long-lived resource."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from . import __version__
from .api import ROUTERS
from .api.deps import GatewayState, SessionCookieMiddleware
from .api.errors import install_error_handlers
from .api.web import WEB_DIR
from .chat import ChatService, SessionLocks
from .config import Settings
from .identity import SessionTokens
from .providers import Provider, build_provider
from .store import create_engine, create_sessionmaker, migrate

log = logging.getLogger(__name__)


def create_app(settings: Settings | None = None, *, provider: Provider | None = None) -> FastAPI:
    """Build the gateway app.

    On start the lifespan applies migrations, opens the database engine and creates (or
    loads, for ``local``) the provider; on stop it closes them. ``provider`` overrides
    the configured one (the caller then owns it, e.g. tests).
    """
    settings = settings or Settings()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await migrate(settings.database_url)
        engine = create_engine(settings.database_url)
        owned_provider = provider is None
        try:
            active = provider or await build_provider(settings)
            try:
                sessionmaker = create_sessionmaker(engine)
                locks = SessionLocks()
                app.state.gateway = GatewayState(
                    settings=settings,
                    engine=engine,
                    sessionmaker=sessionmaker,
                    tokens=SessionTokens(
                        settings.resolve_secret_key(), ttl=settings.session_idle_ttl
                    ),
                    provider=active,
                    locks=locks,
                    chat=ChatService(
                        sessionmaker,
                        active,
                        locks=locks,
                        system_prompt=settings.system_prompt,
                        max_message_chars=settings.max_message_chars,
                        idle_ttl=settings.session_idle_ttl,
                        idle_timeout=settings.idle_timeout,
                        turn_timeout=settings.turn_timeout,
                    ),
                )
                log.info("sessiongate %s ready (provider=%s)", __version__, active.name)
                yield
            finally:
                if owned_provider:
                    await active.aclose()
        finally:
            await engine.dispose()

    app = FastAPI(
        title="sessiongate",
        version=__version__,
        description="A multi-user AI chat gateway that keeps every end user's session isolated.",
        lifespan=lifespan,
    )
    app.add_middleware(SessionCookieMiddleware)
    install_error_handlers(app)
    for router in ROUTERS:
        app.include_router(router)
    app.mount("/static", StaticFiles(directory=WEB_DIR), name="static")
    return app


__all__ = ["create_app"]
