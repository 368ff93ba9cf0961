"""The whole gateway on a Coze provider, configured the way operators configure it
(``COZE_*`` environment variables), against the fake Coze on loopback: per-session
tokens end to end, ``POST /api/coze/token``, and ``sessiongate audit`` telling an
isolated deployment from one whose platform memory leaks."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from sessiongate.app import create_app
from sessiongate.audit import exit_code, run_audit

from ..conftest import make_settings, running_gateway
from ..fakes.coze_server import FakeCoze
from ..fakes.servers import ServerThread
from .conftest import CLIENT_ID, PUBLIC_KEY_ID, KeyPair


@pytest.fixture
def coze_env(monkeypatch: pytest.MonkeyPatch, fake_coze: FakeCoze, key_pair: KeyPair) -> FakeCoze:
    fake_coze.reset(clock=time.time)  # the gateway's clock and Coze's agree, as in life
    for name, value in {
        "COZE_API_BASE": fake_coze.url,
        "COZE_OAUTH_CLIENT_ID": CLIENT_ID,
        "COZE_OAUTH_PUBLIC_KEY_ID": PUBLIC_KEY_ID,
        "COZE_OAUTH_PRIVATE_KEY_FILE": str(key_pair.private_path),
        "COZE_BOT_ID": fake_coze.bot_id,
        "COZE_WORKFLOW_ID": fake_coze.workflow_id,
    }.items():
        monkeypatch.setenv(name, value)
    return fake_coze


@pytest.fixture(params=["coze-bot", "coze-workflow"])
def coze_gateway(
    request: pytest.FixtureRequest,
    coze_env: FakeCoze,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[str]:
    if request.param == "coze-workflow":
        monkeypatch.delenv("COZE_BOT_ID")
        monkeypatch.setenv("COZE_APP_ID", coze_env.app_id)
    settings = make_settings(f"sqlite+aiosqlite:///{tmp_path}/g.db", provider=request.param)
    with ServerThread(create_app(settings)) as server:
        yield server.url


async def test_each_session_chats_with_its_own_token_and_can_fetch_it(
    coze_gateway: str, coze_env: FakeCoze
) -> None:
    async with (
        httpx.AsyncClient(base_url=coze_gateway, timeout=30) as a,
        httpx.AsyncClient(base_url=coze_gateway, timeout=30) as b,
    ):
        for client, text in ((a, "My name is Alice."), (b, "My name is Bob."), (a, "And again.")):
            r = await client.post("/api/chat", json={"message": text})
            assert r.status_code == 200, r.text
        token_a = (await a.post("/api/coze/token")).json()
        token_b = (await b.post("/api/coze/token")).json()
    assert token_a["session_name"] != token_b["session_name"]
    assert token_a["access_token"] != token_b["access_token"]
    assert token_a["expires_in"] > time.time()
    # Every chat carried its token's session_name, and each session exchanged once.
    assert {c.token_session for c in coze_env.chats} == {
        token_a["session_name"],
        token_b["session_name"],
    }
    assert all(c.token_session == c.body_session for c in coze_env.chats)
    assert coze_env.exchanges[token_a["session_name"]] == 1
    assert coze_env.exchanges[token_b["session_name"]] == 1
    assert coze_env.tokens[token_a["access_token"]].session_name == token_a["session_name"]


async def test_token_endpoint_is_404_without_a_coze_oauth_provider(
    sqlite_url: str, fake_openai_server: tuple, fake_openai: object
) -> None:
    async with running_gateway(sqlite_url, fake_openai_server[1]) as gw, gw.client() as c:
        await c.post("/api/session")
        r = await c.post("/api/coze/token")
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "coze_token_unavailable"


@pytest.mark.parametrize("shared_memory", [False, True])
async def test_audit_shows_whether_isolation_holds(
    coze_gateway: str, coze_env: FakeCoze, shared_memory: bool
) -> None:
    coze_env.switches.shared_memory = shared_memory  # a workflow whose memory ignores session
    report = await run_audit(coze_gateway, sessions=3, rounds=1, timeout=30)
    assert report.idor_refused == report.idor_attempts > 0
    if shared_memory:
        assert report.leaks and exit_code(report) == 1
    else:
        assert not report.leaks and exit_code(report) == 0
        assert report.recall_rate == 1.0


def test_missing_setting_stops_start_naming_it(
    coze_env: FakeCoze, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import subprocess
    import sys

    monkeypatch.delenv("COZE_OAUTH_CLIENT_ID")
    env = dict(__import__("os").environ)
    env["SESSIONGATE_DATABASE_URL"] = f"sqlite+aiosqlite:///{tmp_path}/g.db"
    result = subprocess.run(
        [sys.executable, "-m", "sessiongate.cli", "serve", "--provider", "coze-bot", "--port", "0"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert result.returncode == 2
    assert result.stderr.startswith("Cannot start: 1 setting needs attention:")
    assert "  - COZE_OAUTH_CLIENT_ID is required" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("switch", "status", "code"),
    [
        ("chat_5xx", 502, "upstream_error"),
        ("busy", 409, "conversation_busy"),
        ("rate_limited", 429, "rate_limited"),
        ("cut_stream", 502, None),
        ("end_early", 502, None),
        ("chat_failed", 502, None),
        ("error_event", 502, None),
    ],
)
async def test_each_failure_is_a_clear_error_keeps_the_message_and_the_next_turn_works(
    coze_gateway: str, coze_env: FakeCoze, switch: str, status: int, code: str | None
) -> None:
    async with httpx.AsyncClient(base_url=coze_gateway, timeout=30) as client:
        assert (await client.post("/api/chat", json={"message": "warm up"})).status_code == 200
        setattr(coze_env.switches, switch, 1)
        failed = await client.post("/api/chat", json={"message": "this one fails"})
        assert failed.status_code == status, failed.text
        error = failed.json()["error"]
        assert error["message"] and (code is None or error["code"] == code)
        if status == 429:
            assert int(failed.headers["retry-after"]) >= 1
        assert "czs_" not in failed.text and "Traceback" not in failed.text
        after = await client.post("/api/chat", json={"message": "and now?"})
        assert after.status_code == 200, after.text
        conv = after.json()["conversation_id"]
        messages = (await client.get(f"/api/conversations/{conv}/messages")).json()["messages"]
    users = [m["content"] for m in messages if m["role"] == "user"]
    assert users == ["warm up", "this one fails", "and now?"]
    statuses = [m["status"] for m in messages if m["role"] == "assistant"]
    assert statuses == ["complete", "error", "complete"]


async def test_tenant_drives_workflow_inputs_through_v1_within_the_allowed_keys(
    coze_env: FakeCoze, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sessiongate.store.tenants import create_tenant

    monkeypatch.delenv("COZE_BOT_ID")
    monkeypatch.setenv("COZE_APP_ID", coze_env.app_id)
    monkeypatch.setenv("COZE_WORKFLOW_PARAMETERS", '{"USER_INPUT": "{message}"}')
    monkeypatch.setenv("COZE_WORKFLOW_CLIENT_PARAMETERS", "ORDER_NO")
    async with running_gateway(
        f"sqlite+aiosqlite:///{tmp_path}/w.db", None, provider="coze-workflow"
    ) as gw:
        async with gw.state.sessionmaker() as db, db.begin():
            _, key = await create_tenant(db, "shop", allow_system_prompt=True)

        def body(**extra: object) -> dict[str, object]:
            return {
                "model": "m",
                "user": "alice",
                "messages": [{"role": "user", "content": "where is my parcel?"}],
                **extra,
            }

        async with gw.client(headers={"Authorization": f"Bearer {key}"}) as client:
            ok = await client.post(
                "/v1/chat/completions", json=body(parameters={"ORDER_NO": "A-77"})
            )
            assert ok.status_code == 200, ok.text
            assert ok.json()["choices"][0]["finish_reason"] == "stop"
            assert coze_env.chats[-1].parameters == {
                "USER_INPUT": "where is my parcel?",
                "ORDER_NO": "A-77",
            }
            chats = len(coze_env.chats)
            refused = await client.post(
                "/v1/chat/completions", json=body(parameters={"USER_INPUT": "spoof"})
            )
            assert refused.status_code == 400
            error = refused.json()["error"]
            assert error["code"] == "parameter_not_allowed" and error["param"] == "parameters"
            wrong_field = await client.post(
                "/v1/chat/completions", json=body(custom_variables={"a": "b"})
            )
            assert wrong_field.json()["error"]["param"] == "custom_variables"
            system = await client.post(
                "/v1/chat/completions",
                json=body(
                    messages=[
                        {"role": "system", "content": "be terse"},
                        {"role": "user", "content": "hi"},
                    ]
                ),
            )
            # A workflow takes no system prompt: refused, even for a tenant allowed one.
            assert system.status_code == 400
            assert system.json()["error"]["code"] == "system_prompt_not_allowed"
            assert len(coze_env.chats) == chats


async def test_workflow_inputs_on_the_native_chat_api_for_tenants_only(
    coze_env: FakeCoze, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``/api/chat`` and ``/api/chat/stream`` take ``parameters`` like ``/v1``: from a
    tenant's key, within the allowed keys; anyone else, or a wrong or unknown key, is
    refused before anything is stored or sent to Coze."""
    from sessiongate.store.queries import count_sessions
    from sessiongate.store.tenants import create_tenant

    monkeypatch.delenv("COZE_BOT_ID")
    monkeypatch.setenv("COZE_APP_ID", coze_env.app_id)
    monkeypatch.setenv("COZE_WORKFLOW_PARAMETERS", '{"USER_INPUT": "{message}"}')
    monkeypatch.setenv("COZE_WORKFLOW_CLIENT_PARAMETERS", "ORDER_NO")
    async with running_gateway(
        f"sqlite+aiosqlite:///{tmp_path}/n.db", None, provider="coze-workflow"
    ) as gw:
        async with gw.state.sessionmaker() as db, db.begin():
            _, key = await create_tenant(db, "shop")
        tenant = {"Authorization": f"Bearer {key}", "X-Sessiongate-User": "bob"}
        async with gw.client(headers=tenant) as client:
            ok = await client.post(
                "/api/chat", json={"message": "parcel?", "parameters": {"ORDER_NO": "B-9"}}
            )
            assert ok.status_code == 200, ok.text
            assert coze_env.chats[-1].parameters == {"USER_INPUT": "parcel?", "ORDER_NO": "B-9"}
            async with client.stream(
                "POST",
                "/api/chat/stream",
                json={"message": "and now?", "parameters": {"ORDER_NO": "B-10"}},
            ) as streamed:
                assert streamed.status_code == 200
                assert '"type":"done"' in (await streamed.aread()).decode()
            assert coze_env.chats[-1].parameters["ORDER_NO"] == "B-10"
            chats = len(coze_env.chats)
            conversation = ok.json()["conversation_id"]
            stored = len(
                (await client.get(f"/api/conversations/{conversation}/messages")).json()["messages"]
            )
            refusals = [
                ({"parameters": {"USER_INPUT": "spoof"}}, 400, "parameter_not_allowed"),
                ({"parameters": ["ORDER_NO"]}, 422, "invalid_request"),
                ({"custom_variables": {"a": "b"}}, 400, "unsupported_parameter"),
            ]
            for extra, status, code in refusals:
                refused = await client.post(
                    "/api/chat", json={"message": "x", "conversation_id": conversation, **extra}
                )
                assert refused.status_code == status, refused.text
                assert refused.json()["error"]["code"] == code
        async with gw.state.sessionmaker() as db:
            sessions_before = (await count_sessions(db))[0]
        async with gw.client() as anonymous:  # no cookie, no token
            refused = await anonymous.post(
                "/api/chat", json={"message": "x", "parameters": {"ORDER_NO": "C-1"}}
            )
            assert refused.status_code == 403
            assert refused.json()["error"]["code"] == "parameters_not_allowed"
            assert "set-cookie" not in refused.headers
        async with gw.state.sessionmaker() as db:
            assert (await count_sessions(db))[0] == sessions_before  # no session minted
        async with gw.client(headers=tenant) as client:
            after = (await client.get(f"/api/conversations/{conversation}/messages")).json()
        assert len(after["messages"]) == stored  # nothing refused was stored
        assert len(coze_env.chats) == chats  # nor sent to Coze
