"""The HTTP API: one router per resource, errors translated in ``errors``."""

from . import chat, conversations, health, session, web

ROUTERS = (chat.router, conversations.router, session.router, health.router, web.router)

__all__ = ["ROUTERS"]
