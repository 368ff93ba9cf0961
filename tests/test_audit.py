"""The cross-session leak audit against a real gateway on loopback (fake OpenAI upstream):
it passes an isolated gateway and fails a leaking upstream."""

from __future__ import annotations

import itertools
import json
import re
import threading
from typing import Any

import httpx
import pytest
from rich.console import Console

from sessiongate.audit import (
    AuditError,
    AuditReport,
    Leak,
    describe_leak,
    exit_code,
    plan_turns,
    render_table,
    run_audit,
    verdict,
)

CANARY = re.compile(r"my name is (\w+) and my code number is (\d+)", re.IGNORECASE)


def _canaries(messages: list[dict[str, Any]]) -> list[tuple[str, str]]:
    found = []
    for message in messages:
        if message["role"] == "user":
            found += CANARY.findall(str(message["content"]))
    return found


def remembering_reply(messages: list[dict[str, Any]]) -> str:
    """A model that answers from the history it was given (this session's only)."""
    found = _canaries(messages)
    if not found:
        return "I don't know anything about you yet."
    name, number = found[-1]
    return f"Your name is {name} and your code number is {number}."


# A misconfigured upstream (e.g. a Coze workflow whose long-term memory is not
# partitioned by session) remembers every canary it has ever seen, across users.
_SHARED_MEMORY: list[tuple[str, str]] = []
_SHARED_LOCK = threading.Lock()


def shared_memory_reply(messages: list[dict[str, Any]]) -> str:
    with _SHARED_LOCK:
        for canary in _canaries(messages):
            if canary not in _SHARED_MEMORY:
                _SHARED_MEMORY.append(canary)
        known = "; ".join(f"{name} has code number {number}" for name, number in _SHARED_MEMORY)
    return f"I remember: {known}."


async def test_audit_passes_an_isolated_gateway(live_gateway: Any) -> None:
    live_gateway.fake.behaviour.reply = remembering_reply
    calls: list[tuple[int, int]] = []

    report = await run_audit(
        live_gateway.url, sessions=3, rounds=2, progress=lambda d, t: calls.append((d, t))
    )

    assert report.leaks == []
    assert report.probes == 3 * 3 * 2
    assert report.idor_attempts == 3 * 2 * 3  # 3 attackers x 2 owners x (GET, POST, DELETE)
    assert report.idor_refused == report.idor_attempts
    assert report.recall_rate == 1.0
    assert report.errors == 0
    assert exit_code(report) == 0
    assert calls and calls[-1][0] == calls[-1][1]


async def test_audit_finds_a_leak_in_an_upstream_with_shared_memory(live_gateway: Any) -> None:
    _SHARED_MEMORY.clear()
    live_gateway.fake.behaviour.reply = shared_memory_reply

    report = await run_audit(live_gateway.url, sessions=3)

    assert len(report.leaks) > 0
    assert {leak.kind for leak in report.leaks} >= {"number"}
    assert all(leak.session != leak.source for leak in report.leaks)
    assert report.idor_refused == report.idor_attempts
    assert exit_code(report) == 1


async def test_audit_does_not_count_a_name_echoed_from_the_question(live_gateway: Any) -> None:
    # The default fake echoes the user's message, probes' names included: not a leak.
    report = await run_audit(live_gateway.url, sessions=2)

    assert report.leaks == []
    assert report.recall_rate == 0.0  # an echo of the self-question holds no canary
    assert exit_code(report) == 0


async def test_audit_survives_a_failing_upstream(live_gateway: Any) -> None:
    live_gateway.fake.behaviour.fail_status = 500

    report = await run_audit(live_gateway.url, sessions=2)

    assert report.errors > 0
    assert report.answers == 0
    assert report.leaks == []
    assert exit_code(report) == 2  # nothing was answered, so nothing was proved


async def test_report_serialises_to_json_and_renders_as_a_table(live_gateway: Any) -> None:
    live_gateway.fake.behaviour.reply = remembering_reply
    report = await run_audit(live_gateway.url, sessions=2)

    data = json.loads(json.dumps(report.to_dict()))
    assert data["sessions"] == report.sessions == 2
    assert data["probes"] == report.probes
    assert data["leak_count"] == len(report.leaks) == 0
    assert data["idor_attempts"] == report.idor_attempts
    assert data["idor_refused"] == report.idor_refused
    assert data["recall_rate"] == report.recall_rate
    assert data["errors"] == report.errors
    assert data["passed"] is True

    console = Console(record=True, width=100)
    console.print(render_table(report))
    text = console.export_text()
    assert "leaks" in text
    assert f"{report.idor_refused}/{report.idor_attempts}" in text
    assert "100%" in text


def test_a_leaky_report_renders_and_fails() -> None:
    report = AuditReport(sessions=2, probes=4, answers=4)
    report.leaks.append(Leak(1, 2, "number", "reply", "code number 123456"))
    assert exit_code(report) == 1
    assert json.loads(json.dumps(report.to_dict()))["leaks"][0]["source"] == 2


def _gateway_without_ownership_checks() -> httpx.MockTransport:
    """A broken gateway (in memory): any token may read, chat into or delete any
    conversation id, like the old backend that trusted a client-sent id."""
    conversations: dict[str, list[dict[str, str]]] = {}
    owner_of: dict[str, str] = {}
    tokens = itertools.count(1)

    def handle(request: httpx.Request) -> httpx.Response:
        token = request.headers.get("authorization", "").removeprefix("Bearer ")
        path = request.url.path
        if path == "/api/session":
            token = f"token-{next(tokens)}"
            return httpx.Response(201, json={"token": token, "session_id": token})
        if path == "/api/chat":
            body = json.loads(request.content)
            cid = body.get("conversation_id") or f"c-{token}"
            owner_of.setdefault(cid, token)
            history = conversations.setdefault(cid, [])
            history.append({"role": "user", "content": body["message"]})
            reply = remembering_reply(history)
            history.append({"role": "assistant", "content": reply})
            return httpx.Response(
                200, json={"success": True, "message": reply, "conversation_id": cid}
            )
        if path == "/api/conversations":
            own = [{"id": c} for c, t in owner_of.items() if t == token and c in conversations]
            return httpx.Response(200, json={"conversations": own, "total": len(own)})
        cid = path.split("/")[3]
        if cid not in conversations:
            return httpx.Response(404, json={"error": {"code": "not_found", "message": "-"}})
        if request.method == "DELETE":
            del conversations[cid]
            return httpx.Response(204)
        return httpx.Response(200, json={"messages": conversations[cid]})

    return httpx.MockTransport(handle)


async def test_audit_finds_conversations_open_to_other_sessions() -> None:
    async with httpx.AsyncClient(transport=_gateway_without_ownership_checks()) as client:
        report = await run_audit("http://broken", sessions=3, client=client)

    kinds = {(leak.kind, leak.where) for leak in report.leaks}
    assert ("access", "GET") in kinds
    assert ("access", "POST chat") in kinds
    assert ("access", "DELETE") in kinds
    assert report.idor_refused < report.idor_attempts
    assert exit_code(report) == 1


async def _tenant_key(live_gateway: Any, name: str = "acme") -> str:
    from sessiongate.store import create_engine, create_sessionmaker
    from sessiongate.store.tenants import create_tenant

    engine = create_engine(live_gateway.settings.database_url)
    try:
        async with create_sessionmaker(engine)() as db, db.begin():
            _, key = await create_tenant(db, name)
    finally:
        await engine.dispose()
    return key


async def test_audit_covers_tenant_users_and_spends_exactly_the_turns_it_announced(
    live_gateway: Any,
) -> None:
    live_gateway.fake.behaviour.reply = remembering_reply
    key = await _tenant_key(live_gateway)

    report = await run_audit(live_gateway.url, sessions=2, api_key=key, tenant_users=2)

    assert (report.sessions, report.tenant_users) == (4, 2)
    assert report.leaks == [] and report.errors == 0
    assert report.recall_rate == 1.0
    # Tenant users were attacked by anonymous sessions and by each other, and vice versa.
    assert report.idor_attempts == report.idor_refused == 4 * 3 * 3
    tenant_requests = [r for r in live_gateway.fake.requests if r.user]
    assert len({r.user for r in tenant_requests}) == 4
    assert len(live_gateway.fake.requests) == plan_turns(2, 1, 2)[0] == 4 * (1 + 4)
    assert verdict(report).startswith("PASS:")


async def test_audit_with_a_wrong_api_key_stops_before_any_turn(live_gateway: Any) -> None:
    with pytest.raises(AuditError, match="refused the API key"):
        await run_audit(live_gateway.url, sessions=2, api_key="sgk_wrong", tenant_users=1)
    assert live_gateway.fake.requests == []


async def test_audit_finds_a_leak_between_tenant_users(live_gateway: Any) -> None:
    _SHARED_MEMORY.clear()
    live_gateway.fake.behaviour.reply = shared_memory_reply
    key = await _tenant_key(live_gateway)

    report = await run_audit(live_gateway.url, sessions=0, api_key=key, tenant_users=2)

    assert report.leaks and exit_code(report) == 1
    assert verdict(report).startswith("FAIL:")
    assert "tenant user" in describe_leak(report.leaks[0], report)


def test_plain_words_verdict_and_explained_figures() -> None:
    report = AuditReport(sessions=2, probes=4, answers=4, idor_attempts=6, idor_refused=6)
    assert verdict(report).startswith("PASS:")
    console = Console(record=True, width=200)
    console.print(render_table(report))
    text = console.export_text()
    assert "IDOR" not in text and "what it means" in text
    assert "depends on the model" in text and "must be 0" in text
    assert verdict(AuditReport(sessions=2)).startswith("FAIL: the gateway answered no")
    report.leaks.append(Leak(1, 2, "number", "reply", "code number 123456"))
    assert describe_leak(report.leaks[0], report) == (
        "session 1 saw session 2's code number 123456 in a reply"
    )


def test_cli_audit_prints_the_turn_count_and_refuses_without_a_terminal(
    live_gateway: Any,
) -> None:
    from typer.testing import CliRunner

    from sessiongate.cli import app

    result = CliRunner().invoke(app, ["audit", "--url", live_gateway.url, "--sessions", "3"])
    assert result.exit_code == 2
    said = " ".join(result.output.split())
    assert "sends 12 chat turns" in said and "Run again with --yes" in said
    assert live_gateway.fake.requests == []


def test_cli_audit_with_yes_runs_and_ends_with_pass(live_gateway: Any) -> None:
    from typer.testing import CliRunner

    from sessiongate.cli import app

    live_gateway.fake.behaviour.reply = remembering_reply
    result = CliRunner().invoke(
        app, ["audit", "--url", live_gateway.url, "--sessions", "2", "--yes"]
    )
    assert result.exit_code == 0, result.output
    assert result.output.strip().splitlines()[-1].startswith("PASS:")
