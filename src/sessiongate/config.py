"""Settings: environment variables (prefix ``SESSIONGATE_``) and an optional ``.env`` file.

Every setting is listed with its default and meaning in ``.env.example``. Secrets are
``SecretStr`` and are never logged.
"""

from __future__ import annotations

import logging
import os
import secrets
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.engine import make_url

log = logging.getLogger(__name__)

ProviderName = Literal["local", "openai", "coze-bot", "coze-workflow"]


class Settings(BaseSettings):
    """The gateway's configuration. Durations are seconds, sizes are characters or tokens."""

    model_config = SettingsConfigDict(
        env_prefix="SESSIONGATE_", env_file=".env", env_file_encoding="utf-8", extra="ignore"
    )

    provider: ProviderName = "local"
    database_url: str = "sqlite+aiosqlite:///./sessiongate.db"
    secret_key: SecretStr | None = None
    session_idle_ttl: int = Field(86400, ge=60)
    max_message_chars: int = Field(8000, ge=1)
    system_prompt: str = (
        "The following is a conversation between a user and a helpful, honest assistant. "
        "The assistant answers briefly, in the user's language, and remembers what the "
        "user said earlier in this conversation."
    )
    cookie_secure: bool = False

    # Tenants' API keys are managed with `sessiongate tenants`; admins use this token.
    admin_token: SecretStr | None = None
    admin_can_read_chats: bool = False

    # Identity-provider JWTs (RS/ES/PS/EdDSA only): a public key PEM or a JWKS document.
    jwt_public_key_file: Path | None = None
    jwt_jwks_file: Path | None = None
    jwt_issuer: str | None = None
    jwt_audience: str | None = None
    jwt_algorithms: list[str] = ["RS256", "RS384", "RS512", "ES256", "ES384", "PS256", "EdDSA"]
    # "claim=value": an IdP JWT whose claim equals (or, for a list, contains) value is admin.
    jwt_admin_claim: str | None = None

    # Lifecycle: expired sessions are deleted every interval, in batches.
    cleanup_interval: int = Field(3600, ge=0)
    cleanup_batch_size: int = Field(500, ge=1)

    # Rate limits (the `limits` library's notation, e.g. "20/minute"); empty disables.
    rate_limit: str | None = "30/minute"
    tenant_rate_limit: str | None = "600/minute"
    max_concurrent_turns: int = Field(8, ge=1)
    # Shared storage for rate limits across replicas, e.g. redis://127.0.0.1:6379/0.
    redis_url: str | None = None

    # Timeouts (seconds): reaching the provider, silence between two chunks, whole turn.
    connect_timeout: float = Field(10.0, gt=0)
    idle_timeout: float = Field(60.0, gt=0)
    turn_timeout: float = Field(300.0, gt=0)
    keepalive_interval: float = Field(15.0, gt=0)

    # Embedded llama.cpp model.
    local_model_path: str | None = None
    local_context_tokens: int = Field(4096, ge=256)
    local_max_tokens: int = Field(200, ge=1)
    local_temperature: float = Field(0.0, ge=0)
    local_threads: int | None = None
    local_max_queue: int = Field(8, ge=0)

    # Any OpenAI-compatible chat-completions endpoint.
    openai_base_url: str = "https://api.openai.com/v1"
    openai_api_key: SecretStr | None = None
    openai_model: str = "gpt-4o-mini"
    openai_context_tokens: int = Field(8192, ge=256)
    openai_max_tokens: int | None = None

    def secret_key_path(self) -> Path:
        """Where a generated secret key is kept: beside a SQLite file, else the cwd."""
        url = make_url(self.database_url)
        if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
            return Path(url.database).resolve().parent / ".sessiongate-secret"
        return Path(".sessiongate-secret").resolve()

    def resolve_secret_key(self) -> str:
        """Return the signing key: the setting, or a key generated once and kept on disk.

        The generated key is written with mode 0600; a warning says so, because tokens
        signed with it stop working if the file is lost.
        """
        if self.secret_key is not None:
            return self.secret_key.get_secret_value()
        path = self.secret_key_path()
        if path.exists():
            return path.read_text(encoding="utf-8").strip()
        key = secrets.token_urlsafe(48)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(key)
        log.warning(
            "SESSIONGATE_SECRET_KEY is not set; generated one and kept it in %s (mode 0600)",
            path,
        )
        return key


__all__ = ["ProviderName", "Settings"]
