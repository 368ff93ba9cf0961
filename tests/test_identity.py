"""Session tokens and the generated secret key."""

from __future__ import annotations

import stat
from pathlib import Path

import jwt
import pytest

from sessiongate.errors import AuthError
from sessiongate.identity import SessionTokens, bearer_token

from .conftest import SECRET, make_settings


def test_token_round_trip_and_expiry() -> None:
    tokens = SessionTokens(SECRET, ttl=100)
    token = tokens.issue("abc", now=1_000_000_000)
    with pytest.raises(AuthError) as exc:
        tokens.verify(token)  # issued long ago: expired
    assert exc.value.code == "token_expired"
    fresh = tokens.verify(tokens.issue("abc"))
    assert fresh.session_id == "abc" and fresh.expires_at - fresh.issued_at == 100


def test_token_of_another_gateway_or_type_is_refused() -> None:
    tokens = SessionTokens(SECRET, ttl=100)
    other = SessionTokens("another-secret-that-is-at-least-32-chars", ttl=100)
    with pytest.raises(AuthError):
        tokens.verify(other.issue("abc"))
    claims = jwt.decode(tokens.issue("abc"), SECRET, algorithms=["HS256"])
    with pytest.raises(AuthError):
        tokens.verify(jwt.encode({**claims, "typ": "admin"}, SECRET, algorithm="HS256"))
    with pytest.raises(AuthError):
        tokens.verify(jwt.encode({**claims, "iss": "someone"}, SECRET, algorithm="HS256"))


def test_short_signing_key_is_rejected() -> None:
    with pytest.raises(ValueError):
        SessionTokens("short", ttl=100)


@pytest.mark.parametrize("header", ["Basic abc", "Bearer", "Bearer   ", "token"])
def test_malformed_authorization_header(header: str) -> None:
    with pytest.raises(AuthError):
        bearer_token(header)


def test_generated_secret_key_is_kept_private_beside_the_database(tmp_path: Path) -> None:
    settings = make_settings(f"sqlite+aiosqlite:///{tmp_path}/data/g.db", secret_key=None)
    key = settings.resolve_secret_key()
    path = tmp_path / "data" / ".sessiongate-secret"
    assert path.read_text() == key and len(key) >= 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert settings.resolve_secret_key() == key  # kept, not regenerated
