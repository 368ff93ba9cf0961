"""Tenants' API keys and identity-provider JWTs: who may act in which session."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from sessiongate.app import create_app
from sessiongate.store.tenants import create_tenant, revoke_tenant

from .conftest import Gateway, make_settings
from .fakes.openai_server import FakeOpenAI

ISSUER = "https://idp.example.test"
AUDIENCE = "sessiongate-test"


async def new_tenant(gateway: Gateway, name: str) -> dict[str, str]:
    async with gateway.state.sessionmaker() as db, db.begin():
        _, key = await create_tenant(db, name)
    return {"Authorization": f"Bearer {key}"}


async def test_same_user_under_two_tenants_is_two_sessions(
    gateway: Gateway, fake_openai: FakeOpenAI
) -> None:
    x, y = await new_tenant(gateway, "x"), await new_tenant(gateway, "y")
    async with gateway.client() as client:
        rx = await client.post(
            "/api/chat", json={"message": "X secret", "user": "alice"}, headers=x
        )
        ry = await client.post(
            "/api/chat", json={"message": "Y secret", "user": "alice"}, headers=y
        )
        assert rx.status_code == ry.status_code == 200
        assert fake_openai.requests[0].user != fake_openai.requests[1].user
        # The old clients' body field user_id is the same as user for API-key callers.
        again = await client.post(
            "/api/chat", json={"message": "more", "user_id": "alice"}, headers=x
        )
        assert again.json()["conversation_id"] == rx.json()["conversation_id"]
        sent = [m["content"] for m in fake_openai.requests[-1].messages if m["role"] == "user"]
        assert sent == ["X secret", "more"]

        listed_x = await client.get(
            "/api/conversations", headers={**x, "X-Sessiongate-User": "alice"}
        )
        listed_y = await client.get(
            "/api/conversations", headers={**y, "X-Sessiongate-User": "alice"}
        )
        ids_x = {c["id"] for c in listed_x.json()["conversations"]}
        ids_y = {c["id"] for c in listed_y.json()["conversations"]}
        assert ids_x == {rx.json()["conversation_id"]} and ids_y == {ry.json()["conversation_id"]}
        foreign = await client.get(
            f"/api/conversations/{rx.json()['conversation_id']}/messages",
            headers={**y, "X-Sessiongate-User": "alice"},
        )
        assert foreign.status_code == 404


async def test_api_key_caller_must_name_a_user(gateway: Gateway, fake_openai: FakeOpenAI) -> None:
    x = await new_tenant(gateway, "x")
    async with gateway.client() as client:
        r = await client.post("/api/chat", json={"message": "hi"}, headers=x)
        assert r.status_code == 400 and r.json()["error"]["code"] == "user_required"
        r = await client.post(
            "/api/chat",
            json={"message": "hi", "user": "a"},
            headers={**x, "X-Sessiongate-User": "b"},
        )
        assert r.status_code == 400 and r.json()["error"]["code"] == "user_mismatch"
    assert fake_openai.requests == []


async def test_revoked_or_unknown_key_is_refused_at_once(
    gateway: Gateway, fake_openai: FakeOpenAI
) -> None:
    x = await new_tenant(gateway, "x")
    async with gateway.client() as client:
        ok = await client.post("/api/chat", json={"message": "hi", "user": "u"}, headers=x)
        assert ok.status_code == 200
        async with gateway.state.sessionmaker() as db, db.begin():
            await revoke_tenant(db, "x")
        revoked = await client.post("/api/chat", json={"message": "hi", "user": "u"}, headers=x)
        assert revoked.status_code == 401 and revoked.json()["error"]["code"] == "api_key_revoked"
        unknown = await client.post(
            "/api/chat",
            json={"message": "hi", "user": "u"},
            headers={"Authorization": "Bearer sgk_nope"},
        )
        assert unknown.status_code == 401 and unknown.json()["error"]["code"] == "invalid_api_key"


# --- identity-provider JWTs ------------------------------------------------------------


def _rsa_pair() -> tuple[Any, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return key, public.decode()


@pytest.fixture(scope="module")
def idp_keys() -> tuple[Any, str, Any]:
    key, public_pem = _rsa_pair()
    other, _ = _rsa_pair()
    return key, public_pem, other


@pytest.fixture(params=["pem", "jwks"])
async def idp_gateway(
    request: pytest.FixtureRequest,
    sqlite_url: str,
    tmp_path: Path,
    idp_keys: tuple[Any, str, Any],
    fake_openai_server: tuple[FakeOpenAI, str],
    fake_openai: FakeOpenAI,
):  # noqa: ANN201
    key, public_pem, _ = idp_keys
    keys: dict[str, Any] = {}
    if request.param == "pem":
        path = tmp_path / "idp.pem"
        path.write_text(public_pem)
        keys["jwt_public_key_file"] = path
    else:
        jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
        path = tmp_path / "jwks.json"
        path.write_text(json.dumps({"keys": [{**jwk, "kid": "k1", "use": "sig", "alg": "RS256"}]}))
        keys["jwt_jwks_file"] = path
    settings = make_settings(
        sqlite_url,
        fake_openai_server[1],
        jwt_issuer=ISSUER,
        jwt_audience=AUDIENCE,
        jwt_admin_claim="role=admin",
        **keys,
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        yield Gateway(app, settings)


def idp_token(key: Any, **overrides: Any) -> str:
    now = int(time.time())
    claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": "user-42", "iat": now, "exp": now + 300}
    claims.update(overrides)
    return jwt.encode(claims, key, algorithm="RS256", headers={"kid": "k1"})


async def test_valid_idp_jwt_maps_to_the_session_of_its_subject(
    idp_gateway: Gateway, idp_keys: tuple[Any, str, Any], fake_openai: FakeOpenAI
) -> None:
    key = idp_keys[0]
    async with idp_gateway.client() as client:
        first = await client.post(
            "/api/chat",
            json={"message": "hello"},
            headers={"Authorization": f"Bearer {idp_token(key)}"},
        )
        assert first.status_code == 200, first.text
        # A new token for the same subject reaches the same session and history.
        info = await client.get(
            "/api/session/info", headers={"Authorization": f"Bearer {idp_token(key, jti='2')}"}
        )
        assert info.json()["message_count"] == 2
        other = await client.get(
            "/api/session/info",
            headers={"Authorization": f"Bearer {idp_token(key, sub='user-43')}"},
        )
        assert other.json()["message_count"] == 0
        named = await client.post(
            "/api/chat",
            json={"message": "x", "user": "someone-else"},
            headers={"Authorization": f"Bearer {idp_token(key)}"},
        )
        assert named.status_code == 403


def _forged(idp_keys: tuple[Any, str, Any], kind: str) -> str:
    key, public_pem, other = idp_keys
    now = int(time.time())
    base = {"iss": ISSUER, "aud": AUDIENCE, "sub": "user-42", "iat": now, "exp": now + 300}
    if kind == "bad_signature":
        return jwt.encode(base, other, algorithm="RS256", headers={"kid": "k1"})
    if kind == "wrong_issuer":
        return idp_token(key, iss="https://evil.example.test")
    if kind == "wrong_audience":
        return idp_token(key, aud="someone-else")
    if kind == "expired":
        return idp_token(key, iat=now - 900, exp=now - 600)
    if kind == "alg_none":
        return jwt.encode(base, None, algorithm="none")  # type: ignore[arg-type]
    # HS256 "signed" with the public key as the HMAC secret (algorithm confusion).
    header = jwt.utils.base64url_encode(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    payload = jwt.utils.base64url_encode(json.dumps(base).encode())
    import hashlib
    import hmac

    signing_input = header + b"." + payload
    signature = hmac.new(public_pem.encode(), signing_input, hashlib.sha256).digest()
    return (signing_input + b"." + jwt.utils.base64url_encode(signature)).decode()


@pytest.mark.parametrize(
    "kind",
    [
        "bad_signature",
        "wrong_issuer",
        "wrong_audience",
        "expired",
        "alg_none",
        "hs256_with_public_key",
    ],
)
async def test_bad_idp_jwt_is_refused(
    idp_gateway: Gateway, idp_keys: tuple[Any, str, Any], fake_openai: FakeOpenAI, kind: str
) -> None:
    token = _forged(idp_keys, kind)
    async with idp_gateway.client() as client:
        r = await client.post(
            "/api/chat", json={"message": "hi"}, headers={"Authorization": f"Bearer {token}"}
        )
        assert r.status_code == 401, (kind, r.text)
        expected = "token_expired" if kind == "expired" else "invalid_token"
        assert r.json()["error"]["code"] == expected
        assert "set-cookie" not in r.headers
    async with idp_gateway.state.sessionmaker() as db:
        from sessiongate.store import queries as q

        total, _ = await q.count_sessions(db)
    assert total == 0
    assert fake_openai.requests == []


async def test_idp_admin_claim_grants_admin_and_others_do_not(
    idp_gateway: Gateway, idp_keys: tuple[Any, str, Any]
) -> None:
    from sessiongate.api.deps import identify_caller

    key = idp_keys[0]

    def request_with(token: str) -> Any:
        from starlette.requests import Request

        scope = {
            "type": "http",
            "headers": [(b"authorization", f"Bearer {token}".encode())],
            "app": idp_gateway.app,
        }
        return Request(scope)

    admin = await identify_caller(request_with(idp_token(key, role="admin")), idp_gateway.state)
    user = await identify_caller(request_with(idp_token(key)), idp_gateway.state)
    assert admin.kind == "idp" and admin.is_admin
    assert user.kind == "idp" and not user.is_admin


def test_unsafe_algorithm_setting_stops_start() -> None:
    from sessiongate.errors import ConfigurationError
    from sessiongate.identity import IdentityProviderVerifier

    with pytest.raises(ConfigurationError):
        IdentityProviderVerifier(
            issuer=ISSUER, audience=AUDIENCE, algorithms=["HS256"], public_key_file=Path("x")
        )


async def test_session_token_caller_may_not_name_users_even_via_header(
    gateway: Gateway, fake_openai: FakeOpenAI
) -> None:
    async with gateway.client() as client:
        r = await client.get("/api/session/info", headers={"X-Sessiongate-User": "victim"})
    assert r.status_code == 403
