"""CozeSettings: the operator-facing names, defaults, and start-up validation that
names the setting to fix."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from sessiongate.coze.settings import CozeSettings, load_coze_settings
from sessiongate.errors import ConfigurationError

from .conftest import KeyPair

MakeSettings = Callable[..., CozeSettings]


def test_settings_are_read_from_the_names_operators_already_use(
    monkeypatch: pytest.MonkeyPatch, key_pair: KeyPair
) -> None:
    env = {
        "COZE_API_BASE": "https://api.coze.cn",
        "COZE_AUTH_MODE": "OAUTH_JWT",
        "COZE_BOT_ID": "7350000000000000001",
        "COZE_WORKFLOW_ID": "7350000000000000002",
        "COZE_APP_ID": "7350000000000000003",
        "COZE_OAUTH_CLIENT_ID": "1170000000001",
        "COZE_OAUTH_PUBLIC_KEY_ID": "kid-1",
        "COZE_OAUTH_PRIVATE_KEY_FILE": str(key_pair.private_path),
        "SESSIONGATE_COZE_TOKEN_REFRESH_MARGIN": "120",
        "SESSIONGATE_COZE_TOKEN_TTL": "7200",
        "SESSIONGATE_COZE_HISTORY": "gateway",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)

    settings = load_coze_settings(_env_file=None)

    assert settings.api_base == "https://api.coze.cn" and settings.api_host == "api.coze.cn"
    assert (settings.bot_id, settings.workflow_id, settings.app_id) == (
        "7350000000000000001",
        "7350000000000000002",
        "7350000000000000003",
    )
    assert settings.oauth_client_id == "1170000000001"
    assert settings.oauth_public_key_id == "kid-1"
    assert settings.oauth_private_key_file == key_pair.private_path
    assert (settings.token_refresh_margin, settings.token_ttl) == (120, 7200)
    assert settings.history_mode_for("coze-bot") == "gateway"


def test_defaults() -> None:
    settings = CozeSettings(_env_file=None)  # type: ignore[call-arg]

    assert settings.api_base == "https://api.coze.com"
    assert settings.auth_mode == "OAUTH_JWT"
    assert (settings.token_refresh_margin, settings.token_ttl) == (300, 3600)
    assert settings.history_mode_for("coze-bot") == "upstream"
    assert settings.history_mode_for("coze-workflow") == "gateway"


def test_ttl_above_coze_maximum_is_a_configuration_error_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SESSIONGATE_COZE_TOKEN_TTL", "86400")

    with pytest.raises(ConfigurationError, match="SESSIONGATE_COZE_TOKEN_TTL"):
        load_coze_settings(_env_file=None)


@pytest.mark.parametrize(
    ("provider", "overrides", "named"),
    [
        ("coze-bot", {"bot_id": None}, "COZE_BOT_ID"),
        ("coze-workflow", {"workflow_id": None}, "COZE_WORKFLOW_ID"),
        ("coze-workflow", {"app_id": "app-1"}, "both are set"),  # bot_id is set too
        ("coze-workflow", {"bot_id": None}, "neither is set"),
        ("coze-bot", {"oauth_client_id": None}, "COZE_OAUTH_CLIENT_ID"),
        ("coze-bot", {"oauth_public_key_id": ""}, "COZE_OAUTH_PUBLIC_KEY_ID"),
        ("coze-bot", {"oauth_private_key_file": None}, "COZE_OAUTH_PRIVATE_KEY_FILE"),
        ("coze-bot", {"oauth_private_key_file": Path("/nonexistent/key.pem")}, "cannot be read"),
        ("coze-bot", {"api_base": "api.coze.com"}, "COZE_API_BASE"),
        ("coze-bot", {"token_refresh_margin": 3600}, "SESSIONGATE_COZE_TOKEN_REFRESH_MARGIN"),
        ("coze-bot", {"auth_mode": "PAT"}, "COZE_API_TOKEN"),
    ],
)
def test_a_missing_or_malformed_setting_stops_start_up_with_its_name(
    make_settings: MakeSettings, provider: str, overrides: dict[str, object], named: str
) -> None:
    settings = make_settings(**overrides)

    with pytest.raises(ConfigurationError) as caught:
        settings.validate_for(provider)  # type: ignore[arg-type]

    assert named in caught.value.message


def test_a_key_file_that_is_not_pem_is_reported_without_its_content(
    make_settings: MakeSettings, tmp_path: Path
) -> None:
    bogus = tmp_path / "key.pem"
    bogus.write_text("not-a-key-but-maybe-a-secret")

    with pytest.raises(ConfigurationError) as caught:
        make_settings(oauth_private_key_file=bogus).validate_for("coze-bot")

    assert "COZE_OAUTH_PRIVATE_KEY_FILE is not a PEM private key" in caught.value.message
    assert "maybe-a-secret" not in caught.value.message


def test_a_non_rsa_key_is_refused(make_settings: MakeSettings, tmp_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    path = tmp_path / "ec.pem"
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )

    with pytest.raises(ConfigurationError, match="not an RSA key"):
        make_settings(oauth_private_key_file=path).validate_for("coze-bot")


def test_an_inline_key_with_escaped_newlines_works_and_excludes_the_file(
    make_settings: MakeSettings, key_pair: KeyPair
) -> None:
    inline = key_pair.private_pem.replace("\n", "\\n")

    make_settings(oauth_private_key_file=None, oauth_private_key=inline).validate_for("coze-bot")
    with pytest.raises(ConfigurationError, match="only one of"):
        make_settings(oauth_private_key=inline).validate_for("coze-bot")


def test_pat_mode_warns_that_coze_cannot_isolate_users_and_forces_gateway_history(
    make_settings: MakeSettings, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    settings = make_settings(auth_mode="PAT", api_token="pat-secret-value", history="upstream")

    settings.validate_for("coze-bot")

    assert "cannot isolate users" in caplog.text
    assert settings.history_mode_for("coze-bot") == "gateway"
    assert "pat-secret-value" not in caplog.text and "pat-secret-value" not in repr(settings)


def test_secrets_are_not_in_the_settings_repr(
    make_settings: MakeSettings, key_pair: KeyPair
) -> None:
    settings = make_settings(oauth_private_key_file=None, oauth_private_key=key_pair.private_pem)
    settings.validate_for("coze-bot")

    body_line = key_pair.private_pem.splitlines()[1]
    assert body_line not in repr(settings) and body_line not in str(settings)


def test_input_settings_are_read_from_json_or_comma_lists(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("COZE_WORKFLOW_PARAMETERS", '{"USER_INPUT": "{message}", "TIER": 2}')
    monkeypatch.setenv("COZE_WORKFLOW_CLIENT_PARAMETERS", '["ORDER_NO", "TIER"]')
    monkeypatch.setenv("COZE_BOT_CUSTOM_VARIABLES", '{"customer": "{user}"}')
    monkeypatch.setenv("COZE_BOT_CLIENT_VARIABLES", "tier, region")

    settings = load_coze_settings(_env_file=None)

    assert settings.workflow_parameters == {"USER_INPUT": "{message}", "TIER": 2}
    assert settings.workflow_client_parameters == ["ORDER_NO", "TIER"]
    assert settings.bot_custom_variables == {"customer": "{user}"}
    assert settings.bot_client_variables == ["tier", "region"]


def test_malformed_input_settings_name_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COZE_WORKFLOW_PARAMETERS", "{USER_INPUT: message}")
    monkeypatch.setenv("COZE_BOT_CUSTOM_VARIABLES", '{"n": 1}')
    with pytest.raises(ConfigurationError) as caught:
        load_coze_settings(_env_file=None)
    lines = caught.value.message.splitlines()
    assert any(line.startswith("COZE_WORKFLOW_PARAMETERS is invalid") for line in lines)
    assert any(line.startswith("COZE_BOT_CUSTOM_VARIABLES is invalid") for line in lines)


def test_every_missing_or_bad_setting_is_listed_at_once(make_settings: MakeSettings) -> None:
    settings = make_settings(
        oauth_client_id=None,
        oauth_public_key_id=None,
        workflow_id=None,
        app_id=None,
        bot_id=None,
        workflow_parameters={"Q": "{question}", "OK": "{message}"},
    )
    with pytest.raises(ConfigurationError) as caught:
        settings.validate_for("coze-workflow")
    message = caught.value.message
    for named in (
        "COZE_OAUTH_CLIENT_ID",
        "COZE_OAUTH_PUBLIC_KEY_ID",
        "COZE_WORKFLOW_ID",
        "COZE_APP_ID",
        "COZE_WORKFLOW_PARAMETERS",
    ):
        assert named in message
    assert "{question}" in message and len(message.splitlines()) == 5
