"""The fleet scenarios (issue 7, item 7), written once and run against each kind of fleet:
two replicas behind HAProxy on PostgreSQL and Redis, and one ``serve --workers 2`` on one
SQLite file. Each returns figures (counts, seconds) that the run prints at the end.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import subprocess
import sys
import time
from collections import Counter
from datetime import timedelta
from typing import Any

import httpx

from sessiongate.store import SessionRow, create_engine, create_sessionmaker
from sessiongate.store.models import new_id, utcnow

from ..fakes.coze_server import FakeCoze
from .conftest import (
    ADMIN_TOKEN,
    REPLICA_HEADER,
    Fleet,
    GatewayClient,
    StreamResult,
    figure,
    read_sse,
)


def database_url(fleet: Fleet) -> str:
    return fleet.replicas[0].env["SESSIONGATE_DATABASE_URL"]


async def session_names(fleet: Fleet, session_ids: list[str]) -> dict[str, str]:
    """session id -> session_name, read from the fleet's database."""
    from sqlalchemy import select

    engine = create_engine(database_url(fleet))
    try:
        async with create_sessionmaker(engine)() as db:
            rows = await db.execute(
                select(SessionRow.id, SessionRow.session_name).where(SessionRow.id.in_(session_ids))
            )
            return {row.id: row.session_name for row in rows}
    finally:
        await engine.dispose()


def assert_history_in_order(messages: list[dict[str, Any]], sent: list[str]) -> None:
    """Roles alternate user/assistant; each reply answers the message before it; every
    message sent is stored exactly once; every reply is complete."""
    roles = [m["role"] for m in messages]
    assert roles == ["user", "assistant"] * (len(messages) // 2), roles
    users = [m["content"] for m in messages if m["role"] == "user"]
    assert sorted(users) == sorted(sent), (users, sent)
    for question, answer in zip(messages[::2], messages[1::2], strict=True):
        # The fake's model answers a plain statement with "You said: <it>".
        assert answer["content"] == f"You said: {question['content']}", (question, answer)
        assert answer.get("status", "complete") == "complete", answer


def spread(fleet: Fleet, results: list[httpx.Response | StreamResult]) -> str:
    """ "; served by {gw1: n, gw2: m}" behind the balancer, else nothing."""
    return f"; served by {dict(served_by(results))}" if fleet.balancer else ""


def served_by(results: list[httpx.Response | StreamResult]) -> Counter[str]:
    counts: Counter[str] = Counter()
    for result in results:
        if isinstance(result, StreamResult):
            counts[result.replica or "?"] += 1
        else:
            counts[result.headers.get(REPLICA_HEADER, "?")] += 1
    return counts


async def turns_alternate_between_replicas(fleet: Fleet, http: httpx.AsyncClient) -> None:
    """Sequential turns of one session, each through the balancer (round robin)."""
    client = await GatewayClient(http, fleet.url).open_session()
    conversation = await client.new_conversation()
    sent = [f"sequential turn {i} of one session" for i in range(6)]
    results: list[StreamResult] = []
    for text in sent:
        result = await client.stream(text, conversation)
        assert result.status == 200, result.body
        assert result.finished and result.last["type"] == "done", (result.frames, result.cut)
        results.append(result)
    if fleet.balancer is not None:
        assert set(served_by(list(results))) == {"gw1", "gw2"}, served_by(list(results))
    assert_history_in_order(await client.messages(conversation), sent)


async def concurrent_turns_of_one_session(fleet: Fleet, http: httpx.AsyncClient) -> None:
    """Streamed and plain turns of one session at once, on every replica."""
    client = await GatewayClient(http, fleet.url).open_session()
    conversation = await client.new_conversation()
    streamed = [f"streamed turn {i} sent at once" for i in range(10)]
    plain = [f"plain turn {i} sent at once" for i in range(4)]
    started = time.monotonic()
    results = await asyncio.gather(
        *(client.stream(text, conversation) for text in streamed),
        *(client.chat(text, conversation) for text in plain),
    )
    elapsed = time.monotonic() - started
    streams = [r for r in results if isinstance(r, StreamResult)]
    responses = [r for r in results if isinstance(r, httpx.Response)]
    for stream in streams:
        assert stream.status == 200, stream.body
        assert stream.last.get("type") == "done", (stream.frames, stream.cut)
    for response in responses:
        assert response.status_code == 200, response.text
    if fleet.balancer is not None:
        assert set(served_by(list(results))) == {"gw1", "gw2"}, served_by(list(results))
    assert_history_in_order(await client.messages(conversation), streamed + plain)
    figure(
        fleet,
        f"{len(results)} concurrent turns of one session ({len(streams)} streamed): "
        f"all stored in order in {elapsed:.2f} s{spread(fleet, list(results))}",
    )


async def one_token_exchange_per_session(
    fleet: Fleet, http: httpx.AsyncClient, coze: FakeCoze, *, sessions: int = 3, turns: int = 6
) -> None:
    """The first turns of fresh sessions arrive at every replica at once."""
    clients = [await GatewayClient(http, fleet.url).open_session() for _ in range(sessions)]
    conversations = [await c.new_conversation() for c in clients]
    results = await asyncio.gather(
        *(
            c.chat(f"first turns of a fresh session, number {i}", conversation)
            for c, conversation in zip(clients, conversations, strict=True)
            for i in range(turns)
        )
    )
    for response in results:
        assert response.status_code == 200, response.text
    names = await session_names(fleet, [c.session_id or "" for c in clients])
    exchanges = {name: coze.exchanges[name] for name in names.values()}
    assert exchanges == dict.fromkeys(names.values(), 1), exchanges
    chats = sum(len(coze.chats_of(name)) for name in names.values())
    figure(
        fleet,
        f"{sessions} sessions x {turns} concurrent first turns: {chats} Coze chats, "
        f"{sum(exchanges.values())} token exchanges (one per session_name)",
    )


async def session_rate_limit_is_exact(
    fleet: Fleet, http: httpx.AsyncClient, *, limit: int = 20, attempts: int = 30
) -> None:
    """``attempts`` turns of one session at once against SESSIONGATE_RATE_LIMIT=limit/minute."""
    client = await GatewayClient(http, fleet.url).open_session()
    conversation = await client.new_conversation()
    results = await asyncio.gather(
        *(client.chat(f"rate limited turn {i}", conversation) for i in range(attempts))
    )
    statuses = Counter(r.status_code for r in results)
    assert statuses == {200: limit, 429: attempts - limit}, statuses
    figure(
        fleet,
        f"session limit {limit}/minute, {attempts} turns at once: {statuses[200]} admitted, "
        f"{statuses[429]} refused 429{spread(fleet, list(results))}",
    )


def create_tenant(fleet: Fleet) -> str:
    """A new tenant through the CLI (as an operator would); returns its API key."""
    name = f"fleet-{secrets.token_hex(4)}"
    env = dict(fleet.replicas[0].env)
    done = subprocess.run(
        [sys.executable, "-m", "sessiongate.cli", "tenants", "create", name],
        env=env, cwd=fleet.replicas[0].workdir, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()[-1]


async def tenant_rate_limit_is_exact(
    fleet: Fleet, http: httpx.AsyncClient, *, limit: int = 15, attempts: int = 24
) -> None:
    """``attempts`` different users of one tenant at once against a tenant limit of ``limit``."""
    key = create_tenant(fleet)
    results = await asyncio.gather(
        *(
            http.post(
                f"{fleet.url}/api/chat",
                json={"message": f"tenant turn {i}", "user": f"user-{i}"},
                headers={"Authorization": f"Bearer {key}"},
            )
            for i in range(attempts)
        )
    )
    statuses = Counter(r.status_code for r in results)
    assert statuses == {200: limit, 429: attempts - limit}, statuses
    figure(
        fleet,
        f"tenant limit {limit}/minute, {attempts} users at once: {statuses[200]} admitted, "
        f"{statuses[429]} refused 429{spread(fleet, list(results))}",
    )


async def insert_expired_sessions(fleet: Fleet, count: int) -> None:
    engine = create_engine(database_url(fleet))
    past = utcnow() - timedelta(days=3)
    try:
        async with create_sessionmaker(engine)() as db, db.begin():
            db.add_all(
                SessionRow(
                    id=new_id(),
                    session_name="sg_expired_" + secrets.token_hex(12),
                    kind="anonymous",
                    created_at=past,
                    last_active_at=past,
                    expires_at=past,
                )
                for _ in range(count)
            )
    finally:
        await engine.dispose()


async def expired_session_count(fleet: Fleet) -> int:
    from sqlalchemy import func, select

    engine = create_engine(database_url(fleet))
    try:
        async with create_sessionmaker(engine)() as db:
            total = await db.scalar(
                select(func.count())
                .select_from(SessionRow)
                .where(SessionRow.expires_at <= utcnow())
            )
            return int(total or 0)
    finally:
        await engine.dispose()


async def one_cleanup_at_a_time(
    fleet: Fleet, http: httpx.AsyncClient, *, expired: int = 120, callers: int = 6
) -> None:
    """Admin cleanups asked of every replica at once: one deletes everything, once."""
    before = await expired_session_count(fleet)
    await insert_expired_sessions(fleet, expired)
    started = time.monotonic()
    results = await asyncio.gather(
        *(
            http.post(
                f"{fleet.url}/api/admin/cleanup",
                headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
            )
            for _ in range(callers)
        )
    )
    elapsed = time.monotonic() - started
    for response in results:
        assert response.status_code == 200, response.text
    reports = [r.json() for r in results]
    deleted = [r["sessions"] for r in reports]
    # A cleanup that ran deletes everything expired; any other either found the lease
    # held (skipped) or ran after it and found nothing: only one ever deletes.
    assert sum(deleted) == before + expired, reports
    assert len([d for d in deleted if d > 0]) == 1, reports
    assert await expired_session_count(fleet) == 0
    if fleet.balancer is not None:
        assert set(served_by(list(results))) == {"gw1", "gw2"}
    skipped = sum(1 for r in reports if r.get("skipped"))
    figure(
        fleet,
        f"{callers} cleanups at once over {before + expired} expired sessions: one deleted "
        f"them all, {skipped} skipped (lease held), {elapsed:.2f} s",
    )


LONG_MESSAGE = (
    "please repeat this long statement slowly so that the reply takes a while to stream "
    "and another replica can pick it up while it is still being written, piece by piece, "
    "until every single word of it has arrived at the client that reattached to it"
)


async def reply_reattached_on_another_replica(
    fleet: Fleet, http: httpx.AsyncClient, coze: FakeCoze, *, origin: str, other: str
) -> None:
    """Start a slow reply on ``origin``, reattach to it through ``other`` (contract 5)."""
    coze.switches.delta_delay = 0.1  # ~30 deltas: about 3 s of streaming
    client = await GatewayClient(http, fleet.url).open_session()
    conversation = await client.new_conversation()
    async with client.open_stream(LONG_MESSAGE, conversation, base_url=origin) as (
        response,
        first,
    ):
        assert response.status_code == 200, first.body
        await read_sse(response, first, until=3)
        assert first.frames[0]["type"] == "start", first.frames
        assert first.frames[0]["conversation_id"] == conversation
        message_id = first.frames[0]["message_id"]
        started = time.monotonic()
        reattached, _ = await asyncio.gather(
            client.reattach(conversation, base_url=other), read_sse(response, first)
        )
    assert first.last.get("type") == "done", (first.frames, first.cut)
    assert reattached.status == 200, reattached.body
    kinds = [f["type"] for f in reattached.frames]
    assert kinds[0] == "start" and kinds[-1] == "done", kinds
    assert reattached.frames[0]["message_id"] == message_id
    assert set(kinds[1:-1]) <= {"message"}, kinds
    expected = f"You said: {LONG_MESSAGE}"
    assert first.text == expected
    assert reattached.text == expected, reattached.text
    stored = await client.messages(conversation)
    assert [(m["role"], m["status"]) for m in stored] == [
        ("user", "complete"),
        ("assistant", "complete"),
    ], stored
    assert stored[1]["content"] == expected
    figure(
        fleet,
        f"reattach on another process: {len(reattached.frames) - 2} frames after 'start', "
        f"whole reply {len(expected)} chars, done {time.monotonic() - started:.2f} s later",
    )


async def audit_passes(fleet: Fleet) -> None:
    """``sessiongate audit`` against the fleet's front door finds no leak."""
    started = time.monotonic()
    done = await asyncio.to_thread(
        subprocess.run,
        [
            sys.executable, "-m", "sessiongate.cli", "audit", "--url", fleet.url,
            "--sessions", "4", "--rounds", "1", "--timeout", "60", "--json", "--yes",
        ],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, (done.stdout[-3000:], done.stderr[-3000:])
    report = json.loads(done.stdout)
    assert report["passed"] and report["leak_count"] == 0 and not report["errors"], report
    figure(
        fleet,
        f"audit through {'HAProxy' if fleet.balancer else 'the workers'}: "
        f"{report['probes']} probes, {report['idor_attempts']} IDOR attempts all refused, "
        f"0 leaks, {time.monotonic() - started:.1f} s",
    )
