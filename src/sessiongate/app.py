"""The application factory; its lifespan owns every long-lived resource."""

from __future__ import annotations

import asyncio
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
from .errors import ConfigurationError
from .identity import IdentityProviderVerifier, SessionTokens
from .providers import Provider, build_provider
from .ratelimit import TurnLimiter
from .sessions import run_cleanup_periodically
from .store import create_engine, create_sessionmaker, migrate

log = logging.getLogger(__name__)


def build_identity_provider(settings: Settings) -> IdentityProviderVerifier | None:
    """The IdP JWT verifier, if ``SESSIONGATE_JWT_ISSUER`` is set; raises ``ConfigurationError``."""
    if not settings.jwt_issuer:
        return None
    if not settings.jwt_audience:
        raise ConfigurationError(
            "SESSIONGATE_JWT_AUDIENCE is required with SESSIONGATE_JWT_ISSUER."
        )
    return IdentityProviderVerifier(
        issuer=settings.jwt_issuer,
        audience=settings.jwt_audience,
        algorithms=settings.jwt_algorithms,
        public_key_file=settings.jwt_public_key_file,
        jwks_file=settings.jwt_jwks_file,
        admin_claim=settings.jwt_admin_claim,
    )


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
            idp = build_identity_provider(settings)  # cheap: fail before loading a model
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
                    idp=idp,
                    chat=ChatService(
                        sessionmaker,
                        active,
                        locks=locks,
                        system_prompt=settings.system_prompt,
                        max_message_chars=settings.max_message_chars,
                        idle_ttl=settings.session_idle_ttl,
                        idle_timeout=settings.idle_timeout,
                        turn_timeout=settings.turn_timeout,
                        limiter=TurnLimiter(
                            session_limit=settings.rate_limit,
                            tenant_limit=settings.tenant_rate_limit,
                            redis_url=settings.redis_url,
                        ),
                        max_concurrent_turns=settings.max_concurrent_turns,
                    ),
                )
                cleaner = (
                    asyncio.create_task(
                        run_cleanup_periodically(
                            sessionmaker,
                            active,
                            interval=settings.cleanup_interval,
                            batch_size=settings.cleanup_batch_size,
                        ),
                        name="session-cleanup",
                    )
                    if settings.cleanup_interval > 0
                    else None
                )
                log.info("sessiongate %s ready (provider=%s)", __version__, active.name)
                try:
                    yield
                finally:
                    if cleaner is not None:
                        cleaner.cancel()
                        with contextlib.suppress(asyncio.CancelledError):
                            await cleaner
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
