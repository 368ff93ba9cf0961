"""Coze: per-session OAuth JWT access tokens and the ``coze-bot`` / ``coze-workflow`` providers.

Public face for the rest of the gateway:

* ``CozeSettings`` / ``load_coze_settings`` — the ``COZE_*`` and ``SESSIONGATE_COZE_*``
  settings; ``validate_for(provider)`` at start.
* ``build_coze_provider`` — the provider for ``SESSIONGATE_PROVIDER=coze-bot|coze-workflow``.
* ``CozeTokenManager`` — ``issue_token(session_name)`` for ``POST /api/coze/token``.
* ``generate_keypair`` / ``exchange_once`` — ``sessiongate keygen`` / ``sessiongate token``.

The providers live in ``coze.provider``; ``coze.sdk`` is the boundary with cozepy and
httpx, ``coze.workflow_http`` the workflow stream's aiohttp pool. Importing this
package does not import cozepy (slow, and warns at import).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .auth import CozeTokenManager, StaticTokenSource, TokenSource
from .cache import AccessToken, MemoryTokenCache, RedisTokenCache, TokenCache
from .errors import CozeAuthError
from .keys import exchange_once, generate_keypair
from .settings import CozeProviderName, CozeSettings, HistoryMode, load_coze_settings

if TYPE_CHECKING:
    from .provider import CozeBotProvider, CozeWorkflowProvider, build_coze_provider


def __getattr__(name: str) -> Any:
    # The providers import cozepy (slow, and it warns at import); load them on first use.
    if name in {"CozeBotProvider", "CozeWorkflowProvider", "build_coze_provider"}:
        from . import provider

        return getattr(provider, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "AccessToken",
    "CozeAuthError",
    "CozeBotProvider",
    "CozeProviderName",
    "CozeSettings",
    "CozeTokenManager",
    "CozeWorkflowProvider",
    "HistoryMode",
    "MemoryTokenCache",
    "RedisTokenCache",
    "StaticTokenSource",
    "TokenCache",
    "TokenSource",
    "build_coze_provider",
    "exchange_once",
    "generate_keypair",
    "load_coze_settings",
]
