"""Providers: the upstreams that produce the assistant's reply."""

from __future__ import annotations

from .base import (
    AcceptsClientParameters,
    ChatMessage,
    ContextWindow,
    ConversationBound,
    Finish,
    Provider,
    ProviderEvent,
    SessionCredentials,
    TextDelta,
    TurnRequest,
    Usage,
)

__all__ = [
    "AcceptsClientParameters",
    "ChatMessage",
    "ContextWindow",
    "ConversationBound",
    "Finish",
    "Provider",
    "ProviderEvent",
    "SessionCredentials",
    "TextDelta",
    "TurnRequest",
    "Usage",
]
