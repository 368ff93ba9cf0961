"""Key generation for the Coze OAuth app and the one-off token exchange."""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey, RSAPublicKey
from cryptography.hazmat.primitives.serialization import load_pem_private_key, load_pem_public_key

from sessiongate.coze.keys import exchange_once, generate_keypair
from sessiongate.coze.settings import CozeSettings
from sessiongate.errors import ConfigurationError

from ..fakes.coze_server import FakeClock, FakeCoze
from .conftest import CLIENT_ID


def test_keygen_writes_a_private_key_only_its_owner_can_read_and_a_matching_public_key(
    tmp_path: Path,
) -> None:
    old_umask = os.umask(0)  # even a permissive umask must not widen the private key
    try:
        private_path, public_path = generate_keypair(tmp_path / "keys")
    finally:
        os.umask(old_umask)

    assert stat.S_IMODE(private_path.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "keys").stat().st_mode) == 0o700
    private_key = load_pem_private_key(private_path.read_bytes(), password=None)
    public_key = load_pem_public_key(public_path.read_bytes())
    assert isinstance(private_key, RSAPrivateKey) and isinstance(public_key, RSAPublicKey)
    assert private_key.key_size == 2048
    assert private_key.public_key().public_numbers() == public_key.public_numbers()
    assert public_path.read_text().startswith("-----BEGIN PUBLIC KEY-----")


def test_keygen_refuses_to_overwrite_an_existing_key(tmp_path: Path) -> None:
    private_path, _ = generate_keypair(tmp_path)
    before = private_path.read_bytes()

    with pytest.raises(FileExistsError):
        generate_keypair(tmp_path)

    assert private_path.read_bytes() == before


def test_a_generated_key_is_accepted_by_the_settings(tmp_path: Path) -> None:
    private_path, _ = generate_keypair(tmp_path)
    settings = CozeSettings(  # type: ignore[call-arg]
        _env_file=None,
        oauth_client_id=CLIENT_ID,
        oauth_public_key_id="kid",
        oauth_private_key_file=private_path,
        bot_id="bot",
    )

    settings.validate_for("coze-bot")


async def test_exchange_once_returns_a_token_bound_to_the_session_and_its_absolute_expiry(
    make_settings: Callable[..., CozeSettings], fake_coze: FakeCoze, clock: FakeClock
) -> None:
    clock.now = time.time()  # exchange_once stamps its JWT with the real clock, as Coze sees it

    token, expires_at = await exchange_once(make_settings(token_ttl=900), "sess-cli")

    assert fake_coze.tokens[token].session_name == "sess-cli"
    assert expires_at == fake_coze.tokens[token].expires_at
    assert abs(expires_at - (time.time() + 900)) < 60


async def test_exchange_once_needs_oauth_jwt(make_settings: Callable[..., CozeSettings]) -> None:
    with pytest.raises(ConfigurationError, match="OAUTH_JWT"):
        await exchange_once(make_settings(auth_mode="PAT", api_token="pat"), "sess-cli")
