"""The HTTP API: one router per resource, errors translated in ``errors``."""

from . import (
    admin,
    chat,
    conversations,
    coze,
    feedback,
    health,
    metrics,
    openai_compat,
    session,
    web,
)

ROUTERS = (
    chat.router,
    conversations.router,
    feedback.router,
    session.router,
    coze.router,
    openai_compat.router,
    admin.router,
    health.router,
    metrics.router,
    web.router,
    web.ui_router,
)

__all__ = ["ROUTERS"]
