"""Benchmark: chat turns through the gateway versus straight to the upstream, side by side.

The upstream is the tests' fake Coze (``tests/fakes/coze_server.py``), served in a
process of its own on loopback as a workflow whose every reply is 15 words streamed 10 ms
apart (``reply_words``, ``Switches.delta_delay``). For each database (a SQLite file;
PostgreSQL: a database created for this run and dropped at its end) and each number of
users (1, 8, 32, 128; ``--quick``: 1, 8, 32), rounds alternate between:

- **direct**: each user posts ``POST /v1/workflows/chat`` to the fake with its own OAuth
  access token and reads the SSE stream to its end, as the gateway does. Tokens are
  exchanged, keys parsed and the httpx pool built before any timing.
- **gateway**: each user posts ``POST /api/chat/stream`` (one conversation per user) to
  ``sessiongate serve`` — a real subprocess, provider ``coze-workflow`` against the same
  fake under OAuth JWT, with the shared coordination on (``SESSIONGATE_REDIS_URL``, a
  Redis database of its own, ``--redis-db``) — and reads the SSE stream to ``done``.

In a round every user runs ``--turns`` turns back to back (closed loop). Printed per
level: turns/s, p50 and p99 of a whole turn and p50 time to first token on both sides,
the throughput ratio (gateway / direct), the gateway's CPU milliseconds per turn (utime +
stime from ``/proc/<pid>/stat``), and its SQL statements, transactions, pool checkouts
and new connections per turn (counted by SQLAlchemy events inside the gateway, switched
on by ``SESSIONGATE_BENCH_SQL_COUNTS``); at the end, the statements of one turn by text.
``--profile DIR`` records the gateway with py-spy (raw collapsed stacks) during the
gateway rounds of the largest level. ``--history N`` stores N earlier messages in every
gateway conversation before timing: a turn's work before the provider call (its TTFT
overhead) should not grow with it.

    .venv/bin/python bench/turns.py [--quick] [--databases sqlite,postgres] [--users 1,8]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import jwt
from sqlalchemy import insert, select, text, update
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sessiongate.coze import generate_keypair  # noqa: E402

WORDS = 15
WORD_DELAY = 0.010  # seconds between two words
CLIENT_ID = "bench-client"
KEY_ID = "bench-kid"
WORKFLOW_ID = "wf-9"
APP_ID = "app-3"
JWT_BEARER_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
SECRET = "bench-secret-key-0123456789abcdefghijklmnopqrstuvwxyz"
CLK_TCK = os.sysconf("SC_CLK_TCK")
SQL_KEYS = ("statements", "transactions", "checkouts", "connects")


# ------------------------------------------------------------------ processes


def _fake_main(public_key_file: str, words: int = WORDS) -> None:
    """Serve the fake Coze in this process until stdin closes (``--serve-fake``)."""
    from tests.fakes.coze_server import FakeCoze, serve_fake_coze

    fake = FakeCoze(
        clock=time.time,
        public_keys={KEY_ID: Path(public_key_file).read_bytes()},
        client_id=CLIENT_ID,
        workflow_id=WORKFLOW_ID,
        app_id=APP_ID,
        reply_words=words,
    )
    fake.switches.delta_delay = WORD_DELAY
    with serve_fake_coze(fake):
        print(fake.port, flush=True)
        sys.stdin.read()  # the benchmark closes our stdin when it is done


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _cpu_seconds(pid: int) -> float:
    """utime + stime of process ``pid`` (all its threads), seconds."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    rest = stat[stat.rfind(")") + 2 :].split()
    return (int(rest[11]) + int(rest[12])) / CLK_TCK


@contextlib.contextmanager
def _fake_coze(workdir: Path, public_key: Path, words: int = WORDS) -> Iterator[tuple[str, int]]:
    process = subprocess.Popen(
        [sys.executable, __file__, "--serve-fake", str(public_key), str(words)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        cwd=workdir,
        text=True,
    )
    try:
        assert process.stdout is not None
        port = int(process.stdout.readline())
        yield f"http://127.0.0.1:{port}", process.pid
    finally:
        assert process.stdin is not None
        process.stdin.close()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()


@dataclass
class Gateway:
    url: str
    pid: int
    counts_file: Path
    database_url: str

    def sql_counts(self) -> dict[str, Any]:
        """The gateway's SQL counters now (it writes them on SIGUSR1)."""
        self.counts_file.unlink(missing_ok=True)
        os.kill(self.pid, signal.SIGUSR1)
        deadline = time.monotonic() + 10
        while not self.counts_file.exists():
            if time.monotonic() > deadline:
                raise TimeoutError("the gateway did not write its SQL counts")
            time.sleep(0.01)
        return dict(json.loads(self.counts_file.read_text()))


@contextlib.contextmanager
def _gateway(
    workdir: Path, database_url: str, fake_url: str, private_key: Path, redis_url: str
) -> Iterator[Gateway]:
    port = _free_port()
    counts_file = workdir / "sql-counts.json"
    env = {
        **os.environ,
        "SESSIONGATE_PROVIDER": "coze-workflow",
        "SESSIONGATE_DATABASE_URL": database_url,
        "SESSIONGATE_SECRET_KEY": SECRET,
        "SESSIONGATE_REDIS_URL": redis_url,
        "SESSIONGATE_REDIS_PREFIX": f"sgbench{os.getpid()}:",
        # Charged on every turn (their cost is measured), never refusing one.
        "SESSIONGATE_RATE_LIMIT": "100000/minute",
        "SESSIONGATE_ANONYMOUS_RATE_LIMIT": "100000/minute",
        "SESSIONGATE_SESSION_CREATE_RATE_LIMIT": "100000/minute",
        "SESSIONGATE_CLEANUP_INTERVAL": "0",
        "SESSIONGATE_BENCH_SQL_COUNTS": str(counts_file),
        "COZE_API_BASE": fake_url,
        "COZE_AUTH_MODE": "OAUTH_JWT",
        "COZE_OAUTH_CLIENT_ID": CLIENT_ID,
        "COZE_OAUTH_PUBLIC_KEY_ID": KEY_ID,
        "COZE_OAUTH_PRIVATE_KEY_FILE": str(private_key),
        "COZE_WORKFLOW_ID": WORKFLOW_ID,
        "COZE_APP_ID": APP_ID,
    }
    log = (workdir / "gateway.log").open("w")
    command = [
        str(ROOT / ".venv/bin/sessiongate"),
        "serve",
        "--port",
        str(port),
        "--log-level",
        "warning",
    ]
    process = subprocess.Popen(command, env=env, cwd=workdir, stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if process.poll() is not None:
                raise RuntimeError(
                    f"sessiongate serve exited with {process.returncode}: "
                    + (workdir / "gateway.log").read_text()[-2000:]
                )
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/api/health", timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise TimeoutError("sessiongate serve did not answer /api/health")
            time.sleep(0.2)
        yield Gateway(url, process.pid, counts_file, database_url)
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


# ------------------------------------------------------------------ databases


async def _admin_sql(server_url: str, statement: str) -> None:
    engine = create_async_engine(
        make_url(server_url).set(database="postgres"), isolation_level="AUTOCOMMIT"
    )
    try:
        async with engine.connect() as conn:
            await conn.execute(text(statement))
    finally:
        await engine.dispose()


@contextlib.contextmanager
def _database(kind: str, workdir: Path, pg_url: str) -> Iterator[str]:
    if kind == "sqlite":
        yield f"sqlite+aiosqlite:///{workdir / 'bench.db'}"
        return
    name = f"sg_bench_turns_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    asyncio.run(_admin_sql(pg_url, f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(pg_url).set(database=name).render_as_string(hide_password=False)
    finally:
        asyncio.run(_admin_sql(pg_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


async def _pad_history(database_url: str, conversation_ids: list[str], messages: int) -> None:
    """Store ``messages`` more complete messages (user and assistant by turns) at the end
    of each conversation, as if its users had talked that long already."""
    from sessiongate.store import create_engine
    from sessiongate.store.models import ConversationRow, MessageRow, new_id, utcnow

    engine = create_engine(database_url)
    now = utcnow()
    try:
        async with engine.begin() as conn:
            for conversation_id in conversation_ids:
                row = (
                    await conn.execute(
                        select(ConversationRow.session_id, ConversationRow.next_position).where(
                            ConversationRow.id == conversation_id
                        )
                    )
                ).one()
                rows = [
                    {
                        "id": new_id(),
                        "session_id": row.session_id,
                        "conversation_id": conversation_id,
                        "position": row.next_position + 1 + i,
                        "role": "user" if i % 2 == 0 else "assistant",
                        "content": f"earlier message {i}: " + "words " * 20,
                        "status": "complete",
                        "created_at": now,
                        "stop_requested": False,
                    }
                    for i in range(messages)
                ]
                for start in range(0, len(rows), 5000):
                    await conn.execute(insert(MessageRow), rows[start : start + 5000])
                await conn.execute(
                    update(ConversationRow)
                    .where(ConversationRow.id == conversation_id)
                    .values(next_position=row.next_position + messages)
                )
    finally:
        await engine.dispose()


# ------------------------------------------------------------------ the two sides


@dataclass
class Sample:
    seconds: float
    ttft: float


@dataclass
class Side:
    """What one side (direct or gateway) measured over its rounds at one level."""

    samples: list[Sample] = field(default_factory=list)
    wall: float = 0.0
    errors: int = 0

    @property
    def turns_per_second(self) -> float:
        return len(self.samples) / self.wall if self.wall else 0.0

    def pct(self, pct: float, attr: str = "seconds") -> float:
        values = sorted(getattr(s, attr) for s in self.samples)
        if not values:
            return float("nan")
        rank = max(1, round(pct / 100 * len(values) + 0.5 - 1e-9))
        return values[min(rank, len(values)) - 1] * 1000


def _message(user: int, turn: int) -> str:
    return f"User {user} asks question number {turn}: what should I read next?"


class DirectUser:
    """A user calling the fake Coze workflow straight, with its own access token."""

    def __init__(self, index: int, client: httpx.AsyncClient, base: str, token: str) -> None:
        self.index = index
        self.client = client
        self.url = f"{base}/v1/workflows/chat"
        self.session_name = f"bench-direct-{index}"
        self.headers = {"Authorization": f"Bearer {token}", "Accept": "text/event-stream"}
        self.turns = 0

    async def turn(self) -> Sample:
        self.turns += 1
        body = {
            "workflow_id": WORKFLOW_ID,
            "app_id": APP_ID,
            "additional_messages": [
                {
                    "role": "user",
                    "type": "question",
                    "content": _message(self.index, self.turns),
                    "content_type": "text",
                }
            ],
            "parameters": {},
            "session_name": self.session_name,
            "ext": {"user_id": self.session_name},
        }
        start = time.perf_counter()
        first = 0.0
        completed = False
        async with self.client.stream("POST", self.url, json=body, headers=self.headers) as r:
            if r.status_code != 200:
                raise RuntimeError(f"direct: HTTP {r.status_code}")
            event = ""
            async for line in r.aiter_lines():
                if line.startswith("event:"):
                    event = line[6:].strip()
                elif line.startswith("data:"):
                    data = json.loads(line[5:]) if event != "done" else None
                    if event == "conversation.message.delta" and not first:
                        assert isinstance(data, dict) and data["content"]
                        first = time.perf_counter()
                    elif event == "conversation.chat.completed":
                        completed = True
        if not completed:
            raise RuntimeError("direct: the chat did not complete")
        end = time.perf_counter()
        return Sample(end - start, first - start)


class GatewayUser:
    """A user of the gateway: one anonymous session, one conversation."""

    def __init__(self, index: int, client: httpx.AsyncClient, base: str, token: str) -> None:
        self.index = index
        self.client = client
        self.url = f"{base}/api/chat/stream"
        self.headers = {"Authorization": f"Bearer {token}"}
        self.conversation_id: str | None = None
        self.turns = 0

    async def turn(self) -> Sample:
        self.turns += 1
        body: dict[str, Any] = {"message": _message(self.index, self.turns)}
        if self.conversation_id is None:
            body["new_conversation"] = True
        else:
            body["conversation_id"] = self.conversation_id
        start = time.perf_counter()
        first = 0.0
        done = False
        async with self.client.stream("POST", self.url, json=body, headers=self.headers) as r:
            if r.status_code != 200:
                raise RuntimeError(f"gateway: HTTP {r.status_code}: {(await r.aread())[:200]!r}")
            async for line in r.aiter_lines():
                if not line.startswith("data:"):
                    continue
                frame = json.loads(line[5:])
                kind = frame["type"]
                if kind == "message" and not first:
                    first = time.perf_counter()
                elif kind == "done":
                    self.conversation_id = frame["conversation_id"]
                    done = True
                elif kind == "error":
                    raise RuntimeError(f"gateway: error frame {frame.get('code')}")
        if not done:
            raise RuntimeError("gateway: the stream ended without done")
        end = time.perf_counter()
        return Sample(end - start, first - start)


async def _round(users: list[Any], turns: int, side: Side) -> None:
    async def run(user: Any) -> None:
        for _ in range(turns):
            try:
                side.samples.append(await user.turn())
            except (RuntimeError, httpx.HTTPError) as exc:
                side.errors += 1
                if side.errors <= 3:
                    print(f"  ! {type(exc).__name__}: {exc}", file=sys.stderr)

    start = time.perf_counter()
    await asyncio.gather(*(run(u) for u in users))
    side.wall += time.perf_counter() - start


# ------------------------------------------------------------------ one level


@dataclass
class Level:
    users: int
    direct: Side
    gateway: Side
    cpu_ms: float
    fake_cpu_ms: float
    sql: dict[str, float]
    statements: dict[str, float]
    peak_checked_out: int


def _exchange_token(client: httpx.Client, fake_url: str, private_pem: bytes, name: str) -> str:
    now = int(time.time())
    assertion = jwt.encode(
        {
            "iss": CLIENT_ID,
            "aud": fake_url.removeprefix("http://"),
            "iat": now,
            "exp": now + 600,
            "jti": secrets.token_hex(16),
            "session_name": name,
        },
        private_pem,
        algorithm="RS256",
        headers={"kid": KEY_ID, "typ": "JWT"},
    )
    response = client.post(
        f"{fake_url}/api/permission/oauth2/token",
        json={"grant_type": JWT_BEARER_GRANT, "duration_seconds": 3600},
        headers={"Authorization": f"Bearer {assertion}"},
    )
    response.raise_for_status()
    return str(response.json()["access_token"])


async def _level(
    users: int,
    gateway: Gateway,
    fake_url: str,
    fake_pid: int,
    private_pem: bytes,
    args: argparse.Namespace,
    profile: Path | None,
) -> Level:
    # Idle pooled connections are dropped after 2 s, before the servers' 5-s keep-alive
    # timeout (uvicorn's, on the gateway and the fake). With both at 5 s (httpx's
    # default) a connection the server was closing at that moment was sometimes reused,
    # and its request failed with a bare ReadError: the rare errors at 128 users, on
    # either side, where a side's connections sit idle while the other side's round runs.
    limits = httpx.Limits(
        max_connections=users + 8, max_keepalive_connections=users + 8, keepalive_expiry=2.0
    )
    timeout = httpx.Timeout(120.0)
    # Everything the direct side needs is ready before timing: keys parsed, tokens held.
    with httpx.Client(timeout=30) as sync:
        tokens = [
            _exchange_token(sync, fake_url, private_pem, f"bench-direct-{i}") for i in range(users)
        ]
        sessions = [
            str(sync.post(f"{gateway.url}/api/session").json()["token"]) for _ in range(users)
        ]
    async with (
        httpx.AsyncClient(limits=limits, timeout=timeout) as direct_client,
        httpx.AsyncClient(limits=limits, timeout=timeout) as gateway_client,
    ):
        direct_users = [DirectUser(i, direct_client, fake_url, t) for i, t in enumerate(tokens)]
        gateway_users = [
            GatewayUser(i, gateway_client, gateway.url, t) for i, t in enumerate(sessions)
        ]
        # Warm-up: connections, statement caches, the gateway's Coze tokens.
        await _round(direct_users, 1, Side())
        await _round(gateway_users, 1, Side())
        if args.history:
            await _pad_history(
                gateway.database_url, [str(u.conversation_id) for u in gateway_users], args.history
            )
            await _round(gateway_users, 1, Side())  # the padded pages, cached as in use
        direct, through = Side(), Side()
        cpu = fake_cpu = 0.0
        sql: Counter[str] = Counter()
        by_statement: Counter[str] = Counter()
        spy = _start_profile(gateway.pid, profile) if profile is not None else None
        for _ in range(args.rounds):
            await _round(direct_users, args.turns, direct)
            # Counters and CPU are read around the gateway's rounds only.
            before = gateway.sql_counts()
            cpu_before, fake_before = _cpu_seconds(gateway.pid), _cpu_seconds(fake_pid)
            await _round(gateway_users, args.turns, through)
            cpu += _cpu_seconds(gateway.pid) - cpu_before
            fake_cpu += _cpu_seconds(fake_pid) - fake_before
            after = gateway.sql_counts()
            for key in SQL_KEYS:
                sql[key] += after.get(key, 0) - before.get(key, 0)
            old = before.get("by_statement", {})
            for statement, n in after.get("by_statement", {}).items():
                if n > old.get(statement, 0):
                    by_statement[statement] += n - old.get(statement, 0)
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            spy.wait(timeout=60)
    turns = max(len(through.samples), 1)
    return Level(
        users=users,
        direct=direct,
        gateway=through,
        cpu_ms=cpu * 1000 / turns,
        fake_cpu_ms=fake_cpu * 1000 / turns,
        sql={k: sql[k] / turns for k in SQL_KEYS},
        statements={s: n / turns for s, n in by_statement.most_common()},
        peak_checked_out=int(after.get("peak_checked_out", 0)),
    )


def _start_profile(pid: int, output: Path) -> subprocess.Popen[bytes]:
    """py-spy recording ``pid`` (raw collapsed stacks of the thread holding the GIL,
    200 Hz) until SIGINT."""
    return subprocess.Popen(
        [
            str(ROOT / ".venv/bin/py-spy"),
            "record",
            "--pid",
            str(pid),
            "--rate",
            "200",
            "--format",
            "raw",
            "--gil",  # only the thread holding the GIL: CPU, not waiting
            "--full-filenames",
            "--output",
            str(output),
            "--nonblocking",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


# ------------------------------------------------------------------ report


def _print_header(database: str) -> None:
    print(f"\n{database}: {WORDS} words {WORD_DELAY * 1000:.0f} ms apart; ms are per turn\n")
    print(
        "| users | direct turns/s | direct p50 / p99 | gateway turns/s | gateway p50 / p99 "
        "| ratio | TTFT p50 direct / gw | gw CPU ms | fake CPU ms | SQL stmts | tx "
        "| checkouts | new conns | peak conns | errors |"
    )
    print("| " + " | ".join(["---"] * 15) + " |")


def _print_level(level: Level) -> None:
    d, g = level.direct, level.gateway
    ratio = g.turns_per_second / d.turns_per_second if d.turns_per_second else float("nan")
    print(
        f"| {level.users} | {d.turns_per_second:.1f} | {d.pct(50):.0f} / {d.pct(99):.0f} "
        f"| {g.turns_per_second:.1f} | {g.pct(50):.0f} / {g.pct(99):.0f} | {ratio:.2f} "
        f"| {d.pct(50, 'ttft'):.1f} / {g.pct(50, 'ttft'):.1f} | {level.cpu_ms:.1f} "
        f"| {level.fake_cpu_ms:.1f} | {level.sql['statements']:.1f} "
        f"| {level.sql['transactions']:.1f} | {level.sql['checkouts']:.1f} "
        f"| {level.sql['connects']:.2f} | {level.peak_checked_out} | {d.errors} / {g.errors} |",
        flush=True,
    )


def _print_statements(level: Level) -> None:
    print(f"\nSQL statements per gateway turn at {level.users} users:")
    for statement, n in level.statements.items():
        if n >= 0.01:
            print(f"  {n:5.2f}  {statement[:150]}")


# ------------------------------------------------------------------ main


async def _database_run(
    database: str,
    database_url: str,
    workdir: Path,
    fake_url: str,
    fake_pid: int,
    keys: tuple[Path, bytes],
    args: argparse.Namespace,
) -> None:
    private_key, private_pem = keys
    redis_url = f"redis://127.0.0.1:6379/{args.redis_db}"
    levels: list[Level] = []
    with _gateway(workdir, database_url, fake_url, private_key, redis_url) as gateway:
        _print_header(database)
        for users in args.users:
            profile = None
            if args.profile is not None and users == max(args.users):
                profile = args.profile / f"{database}-{users}users.txt"
            level = await _level(users, gateway, fake_url, fake_pid, private_pem, args, profile)
            levels.append(level)
            _print_level(level)
    _print_statements(levels[-1])
    _print_gateway_errors(workdir / "gateway.log")


def _print_gateway_errors(log: Path, most: int = 3) -> None:
    """The first few warnings and tracebacks the gateway logged, so an error column has a
    cause."""
    lines = log.read_text(encoding="utf-8", errors="replace").splitlines()
    warnings = [line for line in lines if "[warning" in line or "[error" in line][:most]
    if warnings:
        print("\n  gateway log:\n  " + "\n  ".join(line[:300] for line in warnings))
    starts = [i for i, line in enumerate(lines) if line.startswith("Traceback")][:most]
    for i in starts:
        end = next((j for j in range(i + 1, len(lines)) if lines[j][:1] not in (" ", "")), i)
        print("\n  gateway log:\n  " + "\n  ".join(lines[max(i - 1, 0) : end + 1][-40:]))


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--serve-fake":
        _fake_main(sys.argv[2], int(sys.argv[3]))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="users 1, 8, 32; 2 rounds")
    parser.add_argument("--users", help="comma-separated user counts (default 1,8,32,128)")
    parser.add_argument("--databases", default="sqlite,postgres")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per side per level")
    parser.add_argument("--turns", type=int, default=4, help="turns per user per round")
    parser.add_argument("--redis-db", type=int, default=11, help="Redis database number")
    parser.add_argument("--pg-url", default="postgresql+asyncpg://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--profile", type=Path, help="directory for py-spy raw profiles")
    parser.add_argument(
        "--history",
        type=int,
        default=0,
        help="messages stored in each gateway conversation before timing (e.g. 20000)",
    )
    args = parser.parse_args()
    default_users = "1,8,32" if args.quick else "1,8,32,128"
    args.users = [int(u) for u in (args.users or default_users).split(",")]
    if args.quick:
        args.rounds = min(args.rounds, 2)
    if args.profile is not None:
        args.profile.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(ImportError):
        import uvloop

        uvloop.install()
    with tempfile.TemporaryDirectory(prefix="sg-bench-turns-") as tmp:
        workdir = Path(tmp)
        private_key, public_key = generate_keypair(workdir / "keys")
        private_pem = private_key.read_bytes()
        with _fake_coze(workdir, public_key) as (fake_url, fake_pid):
            for database in args.databases.split(","):
                with _database(database, workdir, args.pg_url) as database_url:
                    asyncio.run(
                        _database_run(
                            database,
                            database_url,
                            workdir,
                            fake_url,
                            fake_pid,
                            (private_key, private_pem),
                            args,
                        )
                    )


if __name__ == "__main__":
    main()
