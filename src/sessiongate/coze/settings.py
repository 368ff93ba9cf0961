"""Coze settings: the environment variable names Coze operators already use.

``COZE_*`` names are kept exactly as operators' existing deployments spell them; the
gateway's own Coze tuning knobs carry the ``SESSIONGATE_COZE_`` prefix. Secrets (the
personal access token and the inline private key) are ``SecretStr`` and never logged.
Everything is checked once at start by ``CozeSettings.validate_for``, which raises
one ``ConfigurationError`` naming every setting to fix.

Upstream inputs (Coze "Chat" API ``custom_variables``; "Workflow chat" API
``parameters``, a map of the workflow start node's input names to values):
``COZE_WORKFLOW_PARAMETERS`` / ``COZE_BOT_CUSTOM_VARIABLES`` are JSON objects sent
every turn, whose string values may contain ``{message}``, ``{session_name}`` and
``{user}``; ``COZE_WORKFLOW_CLIENT_PARAMETERS`` / ``COZE_BOT_CLIENT_VARIABLES`` list the
keys a tenant's request may add (JSON list or comma-separated).
"""

from __future__ import annotations

import json
import logging
import string
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from pydantic import Field, PrivateAttr, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from ..errors import ConfigurationError

log = logging.getLogger(__name__)

CozeProviderName = Literal["coze-bot", "coze-workflow"]
AuthMode = Literal["OAUTH_JWT", "PAT"]
HistoryMode = Literal["gateway", "upstream"]

#: Coze OAuth JWT: ``duration_seconds`` may not exceed 86399 (one day minus a second).
MAX_TOKEN_TTL = 86399

#: Placeholders a configured input's string value may use.
TEMPLATE_FIELDS = frozenset({"message", "session_name", "user"})


def _template_problem(value: str) -> str | None:
    """Why ``value`` is not a valid input template, or None. Only bare ``{message}``,
    ``{session_name}`` and ``{user}`` are allowed (``{{``/``}}`` for literal braces)."""
    try:
        parsed = list(string.Formatter().parse(value))
    except ValueError as exc:
        return f"{value!r} is not a valid template ({exc}; write {{{{ and }}}} for braces)"
    for _, field, spec, conversion in parsed:
        if field is None:
            continue
        if field not in TEMPLATE_FIELDS or spec or conversion:
            return (
                f"{value!r} uses {{{field}}}; only {{message}}, {{session_name}} and {{user}} "
                "may be used (write {{ and }} for literal braces)"
            )
    return None


def render_inputs(
    template: Mapping[str, Any], *, message: str, session_name: str, user: str | None
) -> dict[str, Any]:
    """``template`` with ``{message}``, ``{session_name}`` and ``{user}`` filled in every
    string value (nested objects and lists too); other values are copied as they are.
    ``user`` is the tenant's end user, ``""`` for anonymous and IdP sessions."""
    values = {"message": message, "session_name": session_name, "user": user or ""}

    def fill(value: Any) -> Any:
        if isinstance(value, str):
            return value.format_map(values)
        if isinstance(value, dict):
            return {k: fill(v) for k, v in value.items()}
        if isinstance(value, list):
            return [fill(v) for v in value]
        return value

    return {key: fill(value) for key, value in template.items()}


def _json_object(value: Any) -> Any:
    if isinstance(value, str):
        if not value.strip():
            return {}
        try:
            return json.loads(value)
        except json.JSONDecodeError as exc:
            raise ValueError(f"not valid JSON ({exc.msg}); expected a JSON object") from None
    return value


def _key_list(value: Any) -> Any:
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            try:
                return json.loads(text)
            except json.JSONDecodeError as exc:
                raise ValueError(f"not a valid JSON list ({exc.msg})") from None
        return [part.strip() for part in text.split(",") if part.strip()]
    return value


class CozeSettings(BaseSettings):
    """Configuration of the ``coze-bot`` and ``coze-workflow`` providers.

    Read from the environment and ``.env``; unknown variables are ignored. Durations are
    seconds. Construct with ``load_coze_settings()`` to get a ``ConfigurationError``
    (not a pydantic error) for malformed values, then call ``validate_for(provider)``.
    """

    # Field names are the Python attributes; each alias is the operator-facing
    # environment name. validate_by_name lets code and tests pass attribute names.
    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        validate_by_name=True,
        validate_by_alias=True,
        case_sensitive=False,
    )

    api_base: str = Field("https://api.coze.com", validation_alias="COZE_API_BASE")
    auth_mode: AuthMode = Field("OAUTH_JWT", validation_alias="COZE_AUTH_MODE")
    api_token: SecretStr | None = Field(None, validation_alias="COZE_API_TOKEN")
    bot_id: str | None = Field(None, validation_alias="COZE_BOT_ID")
    workflow_id: str | None = Field(None, validation_alias="COZE_WORKFLOW_ID")
    app_id: str | None = Field(None, validation_alias="COZE_APP_ID")
    oauth_client_id: str | None = Field(None, validation_alias="COZE_OAUTH_CLIENT_ID")
    oauth_public_key_id: str | None = Field(None, validation_alias="COZE_OAUTH_PUBLIC_KEY_ID")
    oauth_private_key_file: Path | None = Field(
        None, validation_alias="COZE_OAUTH_PRIVATE_KEY_FILE"
    )
    oauth_private_key: SecretStr | None = Field(None, validation_alias="COZE_OAUTH_PRIVATE_KEY")

    token_refresh_margin: int = Field(
        300, ge=0, validation_alias="SESSIONGATE_COZE_TOKEN_REFRESH_MARGIN"
    )
    token_ttl: int = Field(
        3600, ge=60, le=MAX_TOKEN_TTL, validation_alias="SESSIONGATE_COZE_TOKEN_TTL"
    )
    history: HistoryMode | None = Field(None, validation_alias="SESSIONGATE_COZE_HISTORY")

    # Upstream inputs: what the operator sends every turn, and the keys tenants may add.
    workflow_parameters: Annotated[dict[str, Any], NoDecode] = Field(
        default_factory=dict, validation_alias="COZE_WORKFLOW_PARAMETERS"
    )
    workflow_client_parameters: Annotated[list[str], NoDecode] = Field(
        default_factory=list, validation_alias="COZE_WORKFLOW_CLIENT_PARAMETERS"
    )
    bot_custom_variables: Annotated[dict[str, str], NoDecode] = Field(
        default_factory=dict, validation_alias="COZE_BOT_CUSTOM_VARIABLES"
    )
    bot_client_variables: Annotated[list[str], NoDecode] = Field(
        default_factory=list, validation_alias="COZE_BOT_CLIENT_VARIABLES"
    )

    # Parsing an RSA key checks it (~70 ms); validate_for and the token manager share one.
    _private_key: RSAPrivateKey | None = PrivateAttr(None)

    @field_validator("workflow_parameters", "bot_custom_variables", mode="before")
    @classmethod
    def _parse_object(cls, value: Any) -> Any:
        return _json_object(value)

    @field_validator("workflow_client_parameters", "bot_client_variables", mode="before")
    @classmethod
    def _parse_keys(cls, value: Any) -> Any:
        return _key_list(value)

    @property
    def api_host(self) -> str:
        """The API host of ``COZE_API_BASE`` (``host[:port]``): the JWT ``aud`` claim.

        Coze OAuth JWT: ``aud`` is the API host, e.g. ``api.coze.com``; cozepy uses the
        network location of its base URL, which keeps a non-default port.
        """
        return urlsplit(self.api_base).netloc

    @property
    def api_base_url(self) -> str:
        """``COZE_API_BASE`` without a trailing slash, ready for joining paths."""
        return self.api_base.rstrip("/")

    def history_mode_for(self, provider: CozeProviderName) -> HistoryMode:
        """The effective history mode for ``provider``.

        ``SESSIONGATE_COZE_HISTORY`` when set, else ``upstream`` for ``coze-bot`` and
        ``gateway`` for ``coze-workflow``; ``PAT`` always gives ``gateway``, because every
        request then shares one Coze identity and an upstream conversation is the only
        thing that would hold a user's context there.
        """
        if self.auth_mode == "PAT":
            return "gateway"
        if self.history is not None:
            return self.history
        return "upstream" if provider == "coze-bot" else "gateway"

    def private_key_pem(self) -> str:
        """The OAuth private key PEM text, from the file or the inline setting.

        Raises ``ConfigurationError`` naming ``COZE_OAUTH_PRIVATE_KEY_FILE`` /
        ``COZE_OAUTH_PRIVATE_KEY`` when neither, both, or an unreadable file is given.
        The error never contains key material.
        """
        has_file = self.oauth_private_key_file is not None
        has_inline = self.oauth_private_key is not None and bool(
            self.oauth_private_key.get_secret_value().strip()
        )
        if has_file and has_inline:
            raise ConfigurationError(
                "Set only one of COZE_OAUTH_PRIVATE_KEY_FILE and COZE_OAUTH_PRIVATE_KEY."
            )
        if self.oauth_private_key_file is not None:
            path = self.oauth_private_key_file.expanduser()
            try:
                return path.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                raise ConfigurationError(
                    f"COZE_OAUTH_PRIVATE_KEY_FILE={path} cannot be read "
                    f"({type(exc).__name__}); point it at the PEM written by "
                    "`sessiongate keygen`."
                ) from None
        if self.oauth_private_key is not None and has_inline:
            # Environment files often carry a PEM on one line with literal "\n".
            return self.oauth_private_key.get_secret_value().replace("\\n", "\n")
        raise ConfigurationError(
            "COZE_OAUTH_PRIVATE_KEY_FILE (or COZE_OAUTH_PRIVATE_KEY) is required when "
            "COZE_AUTH_MODE=OAUTH_JWT."
        )

    def load_private_key(self) -> RSAPrivateKey:
        """Parse the OAuth private key; Coze OAuth JWT is signed with RS256, so RSA only.

        Raises ``ConfigurationError`` naming the setting when the key is missing, not a
        PEM, encrypted, or not RSA. ``from None`` keeps parser details (which may quote
        key bytes) out of the traceback.
        """
        if self._private_key is not None:
            return self._private_key
        source = (
            "COZE_OAUTH_PRIVATE_KEY_FILE"
            if self.oauth_private_key_file is not None
            else "COZE_OAUTH_PRIVATE_KEY"
        )
        pem = self.private_key_pem()
        try:
            key = load_pem_private_key(pem.encode("utf-8"), password=None)
        except TypeError:
            raise ConfigurationError(
                f"{source} holds an encrypted private key; sessiongate needs an unencrypted "
                "RSA PEM (keep the file mode 0600 instead)."
            ) from None
        except (ValueError, UnsupportedAlgorithm):
            raise ConfigurationError(
                f"{source} is not a PEM private key; expected the RSA key written by "
                "`sessiongate keygen`."
            ) from None
        if not isinstance(key, RSAPrivateKey):
            raise ConfigurationError(
                f"{source} is not an RSA key; Coze OAuth JWT is signed with RS256."
            )
        self._private_key = key
        return key

    def validate_for(self, provider: CozeProviderName, *, warn: bool = True) -> None:
        """Check every setting ``provider`` needs; raise one ``ConfigurationError`` listing
        every problem (one per line), each naming the environment variable to fix.

        Under ``PAT`` (and ``warn``) a warning is logged that Coze cannot isolate users by
        token and gateway history is forced; a pre-flight check passes ``warn=False`` so
        it is said once.
        """
        problems = self.problems_for(provider, warn=warn)
        if problems:
            raise ConfigurationError("\n".join(problems))

    def problems_for(self, provider: CozeProviderName, *, warn: bool = True) -> list[str]:
        """Every problem with the settings ``provider`` needs, each naming its variable
        (empty when all is well). See ``validate_for``."""
        problems: list[str] = []
        parts = urlsplit(self.api_base)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            problems.append(
                f"COZE_API_BASE={self.api_base!r} is not an http(s) URL; use e.g. "
                "https://api.coze.com or https://api.coze.cn."
            )
        if self.auth_mode == "OAUTH_JWT":
            for env, value in (
                ("COZE_OAUTH_CLIENT_ID", self.oauth_client_id),
                ("COZE_OAUTH_PUBLIC_KEY_ID", self.oauth_public_key_id),
            ):
                if not value:
                    problems.append(
                        f"{env} is required when COZE_AUTH_MODE=OAUTH_JWT; copy it "
                        "from the OAuth app (JWT type) in the Coze console."
                    )
            try:
                self.load_private_key()
            except ConfigurationError as exc:
                problems.append(exc.message)
            if self.token_refresh_margin >= self.token_ttl:
                problems.append(
                    "SESSIONGATE_COZE_TOKEN_REFRESH_MARGIN must be smaller than "
                    f"SESSIONGATE_COZE_TOKEN_TTL ({self.token_refresh_margin} >= "
                    f"{self.token_ttl}); every turn would exchange a new token."
                )
        else:
            if self.api_token is None or not self.api_token.get_secret_value().strip():
                problems.append("COZE_API_TOKEN is required when COZE_AUTH_MODE=PAT.")
            if warn and self.history == "upstream":
                log.warning(
                    "SESSIONGATE_COZE_HISTORY=upstream is ignored under COZE_AUTH_MODE=PAT; "
                    "using gateway history"
                )
            if warn:
                log.warning(
                    "COZE_AUTH_MODE=PAT: every end user reaches Coze with the same personal "
                    "access token, so Coze cannot isolate users by token (its memory, variables "
                    "and conversations are shared). Gateway-owned history is forced; use "
                    "OAUTH_JWT for per-user isolation."
                )
        if provider == "coze-bot":
            if not self.bot_id:
                problems.append("COZE_BOT_ID is required for SESSIONGATE_PROVIDER=coze-bot.")
            problems += _input_problems("COZE_BOT_CUSTOM_VARIABLES", self.bot_custom_variables)
        else:
            if not self.workflow_id:
                problems.append(
                    "COZE_WORKFLOW_ID is required for SESSIONGATE_PROVIDER=coze-workflow."
                )
            # Coze workflow chat: exactly one of app_id and bot_id names the workflow's home.
            if bool(self.app_id) == bool(self.bot_id):
                problems.append(
                    "coze-workflow needs exactly one of COZE_APP_ID (workflow in an app) and "
                    "COZE_BOT_ID (workflow bound to a bot); "
                    + ("both are set." if self.app_id else "neither is set.")
                )
            problems += _input_problems("COZE_WORKFLOW_PARAMETERS", self.workflow_parameters)
        return problems


def _input_problems(env: str, template: Mapping[str, Any]) -> list[str]:
    """Template errors in the string values of a configured input object."""
    problems: list[str] = []

    def check(value: Any) -> None:
        if isinstance(value, str):
            if (problem := _template_problem(value)) is not None:
                problems.append(f"{env}: {problem}.")
        elif isinstance(value, dict):
            for item in value.values():
                check(item)
        elif isinstance(value, list):
            for item in value:
                check(item)

    check(dict(template))
    return problems


def env_name(field: str) -> str:
    """The environment variable behind a ``CozeSettings`` attribute (or the alias itself)."""
    info = CozeSettings.model_fields.get(field)
    if info is not None and isinstance(info.validation_alias, str):
        return info.validation_alias
    return field.upper()


def load_coze_settings(**overrides: object) -> CozeSettings:
    """Read ``CozeSettings`` from the environment and ``.env``.

    Raises ``ConfigurationError`` naming the environment variable of every malformed
    value, one per line (e.g. ``SESSIONGATE_COZE_TOKEN_TTL`` above 86399) instead of
    pydantic's error.
    ``overrides`` take precedence over the environment (attribute names).
    """
    try:
        return CozeSettings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        lines = []
        for error in exc.errors():
            where = env_name(str(error["loc"][0])) if error["loc"] else "a COZE_* setting"
            # The input itself is not echoed: it may be a secret.
            lines.append(f"{where} is invalid: {error['msg']}.")
        raise ConfigurationError("\n".join(dict.fromkeys(lines))) from None


__all__ = [
    "MAX_TOKEN_TTL",
    "TEMPLATE_FIELDS",
    "AuthMode",
    "CozeProviderName",
    "CozeSettings",
    "HistoryMode",
    "env_name",
    "load_coze_settings",
    "render_inputs",
]
