"""What a real ``sessiongate serve`` writes to stderr: format, request ids, no content."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from .fakes.openai_server import FakeOpenAI
from .gateway_process import GatewayProcess, gateway_env, serve_process

ADMIN_TOKEN = "admin-token-0123456789abcdef"


def _sqlite(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'gateway.db'}"


def _stopped_lines(gateway: GatewayProcess) -> list[dict[str, Any]]:
    """Stop the gateway (so everything is flushed) and parse its JSON log lines."""
    gateway.process.terminate()
    gateway.process.wait(timeout=30)
    return gateway.json_lines()


def test_json_logs_put_the_request_id_in_every_line_of_a_request(
    tmp_path: Path, fake_openai_server: tuple[FakeOpenAI, str], fake_openai: FakeOpenAI
) -> None:
    env = gateway_env(_sqlite(tmp_path), fake_openai_server[1], SESSIONGATE_LOG_FORMAT="json")
    with serve_process(env, tmp_path) as gateway, httpx.Client(base_url=gateway.url) as client:
        assert client.post(
            "/api/chat", json={"message": "hi"}, headers={"x-request-id": "json-req-1"}
        ).is_success
        with client.stream(
            "POST",
            "/api/chat/stream",
            json={"message": "hi again"},
            headers={"x-request-id": "sse-req-2"},
        ) as stream:
            assert stream.headers["x-request-id"] == "sse-req-2"
            stream.read()
        generated = client.get("/api/health").headers["x-request-id"]
        lines = _stopped_lines(gateway)

    assert all({"event", "level", "logger", "timestamp"} <= line.keys() for line in lines)
    access = [line for line in lines if line["logger"] == "uvicorn.access"]
    by_id = {line.get("request_id"): line["event"] for line in access}
    assert "POST /api/chat HTTP/1.1" in by_id["json-req-1"]
    assert "POST /api/chat/stream HTTP/1.1" in by_id["sse-req-2"]
    assert "GET /api/health HTTP/1.1" in by_id[generated]
    # Start-up lines belong to no request.
    assert any(line["event"].startswith("sessiongate") for line in lines)
    assert all("request_id" not in line for line in lines if "ready" in line["event"])


def test_json_logs_name_the_upstream_log_id_of_a_failed_request(
    tmp_path: Path, fake_openai_server: tuple[FakeOpenAI, str], fake_openai: FakeOpenAI
) -> None:
    fake_openai.behaviour.fail_status = 400  # not retried by the SDK; answered with a log id
    env = gateway_env(_sqlite(tmp_path), fake_openai_server[1], SESSIONGATE_LOG_FORMAT="json")
    with serve_process(env, tmp_path) as gateway, httpx.Client(base_url=gateway.url) as client:
        failed = client.post(
            "/api/chat", json={"message": "hi"}, headers={"x-request-id": "fails-1"}
        )
        assert failed.status_code >= 500
        assert failed.headers["x-request-id"] == "fails-1"
        with client.stream(
            "POST", "/api/chat/stream", json={"message": "hi"}, headers={"x-request-id": "fails-2"}
        ) as stream:
            assert '"type":"error"' in stream.read().decode()
        lines = _stopped_lines(gateway)

    of_request = [line for line in lines if line.get("request_id") == "fails-1"]
    access = [line for line in of_request if line["logger"] == "uvicorn.access"]
    assert len(access) == 1
    assert access[0]["upstream_logid"] == "req_fake_123"
    # Later requests do not inherit it.
    assert all(
        line.get("upstream_logid") is None for line in lines if line.get("request_id") != "fails-1"
    )
    # The turn runs in its own task, which carries the id of the request that started it.
    turn_lines = [
        line
        for line in lines
        if line.get("request_id") == "fails-2" and line["logger"] == "sessiongate.chat"
    ]
    assert turn_lines and "req_fake_123" in turn_lines[0]["event"]


def _chat_twice(gateway: GatewayProcess, canary: str) -> None:
    with httpx.Client(base_url=gateway.url) as client:
        assert client.post("/api/chat", json={"message": f"first {canary}"}).is_success
        with client.stream("POST", "/api/chat/stream", json={"message": f"second {canary}"}) as s:
            assert s.status_code == 200
            s.read()


def test_debug_logs_hold_no_message_content(
    tmp_path: Path, fake_openai_server: tuple[FakeOpenAI, str], fake_openai: FakeOpenAI
) -> None:
    canary = "canary-7d1e55aa"
    env = gateway_env(
        _sqlite(tmp_path),
        fake_openai_server[1],
        SESSIONGATE_LOG_FORMAT="json",
        SESSIONGATE_LOG_LEVEL="debug",
    )
    with serve_process(env, tmp_path) as gateway:
        _chat_twice(gateway, canary)
        lines = _stopped_lines(gateway)
    assert any(line["level"] == "debug" for line in lines)  # debug logging was really on
    assert canary not in gateway.stderr()
    assert canary.upper() not in gateway.stderr().upper()


def test_message_content_is_logged_only_when_log_content_is_on(
    tmp_path: Path, fake_openai_server: tuple[FakeOpenAI, str], fake_openai: FakeOpenAI
) -> None:
    # The counterpart of the test above: the same run with the switch on shows content,
    # so it is the switch, not chance, that keeps it out.
    canary = "canary-0b9f2c11"
    env = gateway_env(
        _sqlite(tmp_path),
        fake_openai_server[1],
        SESSIONGATE_LOG_FORMAT="json",
        SESSIONGATE_LOG_LEVEL="debug",
        SESSIONGATE_LOG_CONTENT="true",
    )
    with serve_process(env, tmp_path) as gateway:
        _chat_twice(gateway, canary)
        _stopped_lines(gateway)
    assert canary in gateway.stderr()


def test_console_logs_escape_a_newline_forged_into_an_admin_path(
    tmp_path: Path, fake_openai_server: tuple[FakeOpenAI, str], fake_openai: FakeOpenAI
) -> None:
    env = gateway_env(
        _sqlite(tmp_path),
        fake_openai_server[1],
        SESSIONGATE_LOG_FORMAT="console",
        SESSIONGATE_ADMIN_TOKEN=ADMIN_TOKEN,
    )
    forged = "2026-01-01T00:00:00Z [info     ] admin action=delete_session target=all"
    path = "/api/admin/sessions/abc%0A" + forged.replace(" ", "%20")
    with serve_process(env, tmp_path) as gateway, httpx.Client(base_url=gateway.url) as client:
        assert (
            client.get(path, headers={"authorization": f"Bearer {ADMIN_TOKEN}"}).status_code == 404
        )
        assert (
            client.get(path, headers={"authorization": "Bearer not-the-admin"}).status_code == 401
        )
        gateway.process.terminate()
        gateway.process.wait(timeout=30)
    lines = gateway.stderr().splitlines()
    assert not any(line.startswith(forged) for line in lines)
    audit = [line for line in lines if "admin action=get_session" in line]
    assert len(audit) == 1 and "target=abc\\n2026-01-01" in audit[0]
    denied = [line for line in lines if "admin access denied" in line]
    assert len(denied) == 1
    assert "GET /api/admin/sessions/abc\\n2026-01-01" in denied[0]
    assert "reason=invalid_token" in denied[0] and "not-the-admin" not in gateway.stderr()
