"""The application factory; its lifespan owns every long-lived resource."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from . import __version__
from .api import ROUTERS, openai_compat
from .api.clients import parse_networks
from .api.deps import GatewayState, SessionCookieMiddleware, json_body_limit
from .api.errors import install_error_handlers
from .api.http_metrics import HttpMetricsMiddleware
from .api.middleware import (
    BodySizeLimitMiddleware,
    CrossSiteMiddleware,
    JsonTextMiddleware,
    PageHeadersMiddleware,
)
from .api.request_id import RequestIdMiddleware
from .api.web import WEB_DIR, ui_image_sources
from .chat import ChatService, TurnLimits, run_recovery_periodically
from .config import Settings
from .coordination import DatabaseCoordinator, RedisCoordinator, SessionCoordination
from .errors import ConfigurationError
from .identity import IdentityProviderVerifier, SessionTokens
from .logs import ensure_logging
from .metrics import mark_process_dead
from .providers import Provider
from .ratelimit import ClientLimiter, TurnLimiter
from .redis_pool import connect_redis
from .replies import RedisReplyStream
from .sessions import SessionService, run_cleanup_periodically
from .store import create_engine, create_sessionmaker, read_engine
from .store.migration_lock import migrate_exclusively
from .upstreams import build_provider

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


def create_app(
    settings: Settings | None = None,
    *,
    provider: Provider | None = None,
    migrate_on_start: bool = True,
) -> FastAPI:
    """Build the gateway app.

    On start the lifespan applies migrations (under a cross-process lock; skipped when
    ``migrate_on_start`` is False because the caller already did), opens the database
    engine (and Redis when configured), creates (or loads, for ``local``) the provider
    and starts the background tasks (reply recovery, session cleanup); on stop it lets
    replies in progress finish briefly and closes everything in reverse order.
    ``provider`` overrides the configured one (the caller then owns it, e.g. tests).
    """
    settings = settings or Settings()
    # Observability: logging is configured once per process (`serve` may have done it).
    ensure_logging(
        fmt=settings.log_format, level=settings.log_level, log_content=settings.log_content
    )
    trusted_proxies = parse_networks(settings.trusted_proxies)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as stack:
            # Observability: at the very end, this worker's live gauges stop counting.
            stack.callback(mark_process_dead)
            if migrate_on_start:
                await migrate_exclusively(settings.database_url)
            engine = create_engine(
                settings.database_url,
                pool_size=settings.db_pool_size,
                max_overflow=settings.db_max_overflow,
                pool_timeout=settings.db_pool_timeout,
            )
            stack.push_async_callback(engine.dispose)
            redis_pool: dict[str, Any] = {
                "max_connections": settings.redis_max_connections,
                "timeout": settings.redis_pool_timeout,
            }
            redis = connect_redis(settings.redis_url, **redis_pool) if settings.redis_url else None
            if redis is not None:
                stack.push_async_callback(redis.aclose)
            idp = build_identity_provider(settings)  # cheap: fail before loading a model
            active = provider or await build_provider(settings, redis=redis)
            if provider is None:
                stack.push_async_callback(active.aclose)
            sessionmaker = create_sessionmaker(engine)
            coordination = SessionCoordination(
                RedisCoordinator(redis, prefix=settings.redis_prefix)
                if redis is not None
                else DatabaseCoordinator(sessionmaker),
                lock_ttl=settings.lock_ttl,
            )
            clients = ClientLimiter(
                session_limit=settings.session_create_rate_limit,
                turn_limit=settings.anonymous_rate_limit,
                redis_url=settings.redis_url,
                key_prefix=settings.redis_prefix,
                redis_pool=redis_pool,
            )
            stack.push_async_callback(clients.aclose)
            limiter = TurnLimiter(
                session_limit=settings.rate_limit,
                tenant_limit=settings.tenant_rate_limit,
                redis_url=settings.redis_url,
                key_prefix=settings.redis_prefix,
                redis_pool=redis_pool,
            )
            stack.push_async_callback(limiter.aclose)
            chat = ChatService(
                sessionmaker,
                active,
                coordination,
                limits=TurnLimits(
                    system_prompt=settings.system_prompt,
                    max_message_chars=settings.max_message_chars,
                    max_reply_chars=settings.max_reply_chars,
                    idle_ttl=settings.session_idle_ttl,
                    idle_timeout=settings.idle_timeout,
                    turn_timeout=settings.turn_timeout,
                    turn_wait=settings.turn_wait,
                    max_concurrent_turns=settings.max_concurrent_turns,
                    history_messages=settings.history_messages,
                    save_interval=settings.reply_save_interval,
                ),
                limiter=limiter,
                stream=RedisReplyStream(redis, prefix=settings.redis_prefix)
                if redis is not None
                else None,
            )
            stack.push_async_callback(chat.aclose)
            app.state.gateway = GatewayState(
                settings=settings,
                engine=engine,
                sessionmaker=sessionmaker,
                reader=read_engine(engine),
                tokens=SessionTokens(settings.resolve_secret_key(), ttl=settings.session_idle_ttl),
                provider=active,
                chat=chat,
                sessions=SessionService(
                    sessionmaker, coordination, active, wait=settings.turn_wait
                ),
                idp=idp,
                clients=clients,
                trusted_proxies=trusted_proxies,
            )
            tasks = [
                asyncio.create_task(
                    run_recovery_periodically(chat, interval=settings.lock_ttl),
                    name="reply-recovery",
                )
            ]
            if settings.cleanup_interval > 0:
                tasks.append(
                    asyncio.create_task(
                        run_cleanup_periodically(
                            sessionmaker,
                            active,
                            interval=settings.cleanup_interval,
                            batch_size=settings.cleanup_batch_size,
                        ),
                        name="session-cleanup",
                    )
                )
            stack.push_async_callback(_cancel_all, tasks)
            log.info("sessiongate %s ready (provider=%s)", __version__, active.name)
            yield

    app = FastAPI(
        title="sessiongate",
        version=__version__,
        description="A multi-user AI chat gateway that keeps every end user's session isolated.",
        lifespan=lifespan,
        # /docs and /redoc are served by api.web from vendored files (no CDN).
        docs_url=None,
        redoc_url=None,
    )
    # Outermost last: page headers, cross-site refusal, body cap, JSON text, cookie.
    app.add_middleware(SessionCookieMiddleware)
    app.add_middleware(JsonTextMiddleware)
    json_limit = json_body_limit(settings)
    app.add_middleware(
        BodySizeLimitMiddleware,
        limit_for=lambda path: (
            openai_compat.MAX_BODY_BYTES if path.startswith("/v1/") else json_limit
        ),
    )
    app.add_middleware(CrossSiteMiddleware)
    app.add_middleware(
        PageHeadersMiddleware,
        frame_ancestors=settings.frame_ancestors,
        img_sources=ui_image_sources(settings),
    )
    # Observability: added last = outermost, so every response carries its request id.
    app.add_middleware(HttpMetricsMiddleware)
    app.add_middleware(RequestIdMiddleware)
    install_error_handlers(app)
    for router in ROUTERS:
        app.include_router(router)
    app.mount("/static", StaticFiles(directory=WEB_DIR), name="static")
    return app


async def _cancel_all(tasks: list[asyncio.Task[None]]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


#: Set to "1" by ``sessiongate serve`` once it has applied migrations, before it starts
#: uvicorn's worker processes: their lifespans then skip migrating.
MIGRATED_ENV = "SESSIONGATE_SERVE_MIGRATED"


def create_app_from_env() -> FastAPI:
    """The app factory for ``sessiongate serve --workers N`` and ``uvicorn --factory``.

    Each worker process calls it (``sessiongate.app:create_app_from_env``) and reads
    ``Settings`` from the environment and ``.env``. Migrations run in the lifespan under
    the migration lock unless ``SESSIONGATE_SERVE_MIGRATED=1`` says ``serve`` did them.
    """
    return create_app(Settings(), migrate_on_start=os.environ.get(MIGRATED_ENV) != "1")


__all__ = ["MIGRATED_ENV", "create_app", "create_app_from_env"]
