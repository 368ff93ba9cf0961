"""The HTTP API: one router per resource, errors translated in ``errors``."""

from . import admin, chat, conversations, coze, health, openai_compat, session, web

ROUTERS = (
    chat.router,
    conversations.router,
    session.router,
    coze.router,
    openai_compat.router,
    admin.router,
    health.router,
    web.router,
)

__all__ = ["ROUTERS"]
