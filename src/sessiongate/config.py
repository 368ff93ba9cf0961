"""Settings: environment variables (prefix ``SESSIONGATE_``) and an optional ``.env`` file.

Every setting is listed with its default and meaning in ``.env.example``. Secrets are
``SecretStr`` and are never logged.
"""

from __future__ import annotations

import logging
import os
import secrets
import tempfile
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.engine import make_url

from .errors import ConfigurationError

log = logging.getLogger(__name__)

ProviderName = Literal["local", "openai", "coze-bot", "coze-workflow"]
UiLanguage = Literal["auto", "zh-CN", "en"]


class Settings(BaseSettings):
    """The gateway's configuration. Durations are seconds, sizes are characters or tokens."""

    model_config = SettingsConfigDict(
        env_prefix="SESSIONGATE_", env_file=".env", env_file_encoding="utf-8", extra="ignore"
    )

    provider: ProviderName = "local"
    database_url: str = "sqlite+aiosqlite:///./sessiongate.db"
    # Connection pool: kept open, opened beyond that under bursts, seconds to wait for one.
    db_pool_size: int = Field(20, ge=1)
    db_max_overflow: int = Field(0, ge=0)
    db_pool_timeout: float = Field(10.0, gt=0)
    secret_key: SecretStr | None = None
    # Where a generated key is kept when SESSIONGATE_SECRET_KEY is unset (see secret_key_path).
    secret_key_file: Path | None = None
    session_idle_ttl: int = Field(86400, ge=60)
    max_message_chars: int = Field(8000, ge=1)
    system_prompt: str = (
        "The following is a conversation between a user and a helpful, honest assistant. "
        "The assistant answers briefly, in the user's language, and remembers what the "
        "user said earlier in this conversation."
    )
    # Secure cookie (HTTPS only); the cookie is then named with the ``__Host-`` prefix.
    cookie_secure: bool = False
    # Anonymous sessions (the chat page's visitors); false for API-only deployments.
    anonymous: bool = True

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
    # Per client address: new anonymous sessions, and turns of anonymous sessions.
    session_create_rate_limit: str | None = "20/minute"
    anonymous_rate_limit: str | None = "60/minute"
    # Proxies (IP addresses or CIDR networks) whose X-Forwarded-For is believed.
    trusted_proxies: list[str] = []
    # Shared coordination across replicas (session locks, turn admission, rate limits,
    # the Coze token cache, live replies), e.g. redis://127.0.0.1:6379/0. Without it the
    # database coordinates (correct for several processes, slower).
    redis_url: str | None = None
    redis_prefix: str = "sg:"
    # Connections per Redis pool, and seconds a command waits for a free one (then 503).
    redis_max_connections: int = Field(256, ge=1)
    redis_pool_timeout: float = Field(10.0, gt=0)

    # Turns: how long a turn waits for the session's running turn before 409
    # session_busy; what a client disconnect does to its reply; the longest reply; how
    # often (seconds) a growing reply is saved; how many stored messages a turn may send
    # upstream as context (before the provider's own token trimming).
    turn_wait: float = Field(30.0, ge=0)
    on_disconnect: Literal["continue", "cancel"] = "continue"
    max_reply_chars: int = Field(20000, ge=1)
    reply_save_interval: float = Field(1.0, gt=0)
    history_messages: int = Field(200, ge=1)
    # A session lock not renewed for this long (seconds) is considered abandoned (its
    # process died); replies left streaming under it are marked interrupted.
    lock_ttl: float = Field(15.0, ge=1)

    # Timeouts (seconds): reaching the provider, silence between two chunks, whole turn.
    connect_timeout: float = Field(10.0, gt=0)
    idle_timeout: float = Field(60.0, gt=0)
    turn_timeout: float = Field(300.0, gt=0)
    keepalive_interval: float = Field(15.0, gt=0)
    # Text deltas of a streamed reply that arrive within this many seconds of the last
    # text sent go out together as one frame (0: every delta at once).
    stream_flush_interval: float = Field(0.05, ge=0, le=1)

    # The HTTP edge: a request (headers and body) must arrive within this many seconds;
    # at most this many connections are open at once (beyond: 503).
    request_read_timeout: float = Field(10.0, gt=0)
    max_connections: int = Field(1000, ge=1)
    # CSP frame-ancestors of the pages: who may frame the chat ('none': nobody).
    frame_ancestors: str = "'none'"

    # The chat page's language and the operator's brand (docs: README "The chat page").
    # `auto` follows the browser's languages; the page also has a switch.
    ui_language: UiLanguage = "auto"
    ui_title: str = Field("", max_length=120)  # empty: the catalogue's "Chat"
    ui_bot_name: str = Field("", max_length=60)  # empty: the catalogue's "Assistant"
    # An http(s) URL, a path on this origin ("/..."), or a local image file the gateway
    # serves at /api/ui/avatar; empty: the bot name's first letter.
    ui_avatar: str = ""
    ui_welcome: str = ""  # markdown shown on an empty conversation
    ui_suggestions: list[str] = []  # JSON list of questions offered as buttons
    ui_accent_color: str = Field("", pattern=r"^(#[0-9a-fA-F]{6}|#[0-9a-fA-F]{3})?$")
    # Hosts whose images replies may show (exact host names); others become links.
    ui_image_hosts: list[str] = []

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

    # Observability: logs (structlog) and the Prometheus endpoint.
    log_format: Literal["json", "console"] = "console"
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    # Security: message content reaches the logs only when this is true.
    log_content: bool = False
    # Bearer token for GET /metrics; unset: /metrics is open (keep it off the internet).
    metrics_token: SecretStr | None = None

    @field_validator("log_format", "log_level", mode="before")
    @classmethod
    def _lowercase(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value

    def secret_key_path(self) -> Path | None:
        """Where a generated secret key is kept, or None when no place can be shared.

        ``SESSIONGATE_SECRET_KEY_FILE`` if set; else beside a SQLite file (every process
        that can open that file can read the key); else None: with PostgreSQL the
        replicas may run on different machines, where a file in one's working
        directory would give each machine its own key.
        """
        if self.secret_key_file is not None:
            return self.secret_key_file.resolve()
        url = make_url(self.database_url)
        if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
            return Path(url.database).resolve().parent / ".sessiongate-secret"
        if url.get_backend_name() == "sqlite":
            return Path(".sessiongate-secret").resolve()  # in-memory: one process anyway
        return None

    def resolve_secret_key(self) -> str:
        """Return the signing key: the setting, or one generated once and kept on disk.

        Race-free across processes (replicas, ``--workers``): the key is written to a
        temporary file and published with ``os.link``, which fails if the file already
        exists, so every contender ends up reading the one complete file; nobody ever
        reads a half-written or empty key. The file has mode 0600; a warning says it
        was generated, because tokens signed with it stop working if it is lost.

        Raises ``ConfigurationError`` (naming ``SESSIONGATE_SECRET_KEY`` /
        ``SESSIONGATE_SECRET_KEY_FILE``) when no key is set on a database whose replicas
        could not share a generated one (PostgreSQL), or the key file is empty or
        cannot be written.
        """
        if self.secret_key is not None:
            return self.secret_key.get_secret_value()
        path = self.secret_key_path()
        if path is None:
            raise ConfigurationError(
                "SESSIONGATE_SECRET_KEY is not set, and with PostgreSQL a key generated by "
                "one process cannot be shared with replicas on other machines. Set "
                "SESSIONGATE_SECRET_KEY to the same random value (at least 32 characters) "
                'on every replica, e.g. the output of `python -c "import secrets; '
                'print(secrets.token_urlsafe(48))"`, or SESSIONGATE_SECRET_KEY_FILE to a '
                "file every replica reads (generated there once if missing)."
            )
        return _load_or_create_key(path)


def _read_key(path: Path) -> str | None:
    """The key stored at ``path``, None if there is no file; refuses an empty one."""
    try:
        key = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    if not key:
        raise ConfigurationError(
            f"The secret key file {path} is empty. Delete it to generate a new key (every "
            "session token signed with the old one stops working), or set "
            "SESSIONGATE_SECRET_KEY."
        )
    return key


def _load_or_create_key(path: Path) -> str:
    """Read the key at ``path``, generating it first if missing (see ``resolve_secret_key``)."""
    existing = _read_key(path)
    if existing is not None:
        return existing
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # mkstemp creates the file with mode 0600; the key is complete and on disk before
        # the link makes it visible under its real name.
        fd, temporary = tempfile.mkstemp(prefix=".sessiongate-secret.", dir=path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(secrets.token_urlsafe(48))
                fh.flush()
                os.fsync(fh.fileno())
            try:
                os.link(temporary, path)
                created = True
            except FileExistsError:
                created = False  # another process won the race: use its key
        finally:
            os.unlink(temporary)
    except OSError as exc:
        raise ConfigurationError(
            f"Cannot create the secret key file {path} ({exc.strerror}). Set "
            "SESSIONGATE_SECRET_KEY, or SESSIONGATE_SECRET_KEY_FILE to a writable place."
        ) from exc
    key = _read_key(path)
    if key is None:  # deleted between our link and our read: refuse rather than guess
        raise ConfigurationError(
            f"The secret key file {path} disappeared while starting. Set SESSIONGATE_SECRET_KEY."
        )
    if created:
        log.warning(
            "SESSIONGATE_SECRET_KEY is not set; generated one and kept it in %s (mode 0600)",
            path,
        )
    return key


__all__ = ["ProviderName", "Settings", "UiLanguage"]
