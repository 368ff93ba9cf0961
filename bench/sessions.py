"""Benchmark: the gateway with many sessions in the store, on SQLite and PostgreSQL.

With ``--sessions`` (default 100,000) sessions stored, prints per database:

- the time of an admin page of 50 sessions (``store.admin.list_sessions``), the first
  page and a deep one (the keyset cursor of the middle session), and of ``stats``
  (median of ``--runs``);
- the time of cleaning ``--sessions`` expired sessions (``cleanup_expired_sessions``,
  the gateway's batch size), with ``--sessions`` live ones beside them;
- the latency of ``--turns`` sequential ``POST /api/chat`` turns (p50/p95, ms) through a
  real uvicorn on loopback, once idle and once while such a cleanup runs, and the ratio.
  By default the cleanup runs on the gateway's own event loop, as
  ``run_cleanup_periodically`` does in production; ``--cleanup-in thread`` runs it from
  the benchmark process on a separate engine and thread instead;
- the resident memory (VmRSS, MiB) of a ``sessiongate serve`` process after the same few
  requests, with an empty store and with ``--sessions`` idle (live) sessions.

The upstream is the fake OpenAI server of the tests (``tests/fakes``), on loopback.
PostgreSQL is reached at ``--pg-url``; the benchmark uses its own database
(``sessiongate_bench``, created if missing and wiped at start), never the tests' one.

    .venv/bin/python bench/sessions.py [--sessions 100000] [--databases sqlite,postgres]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import httpx
from sqlalchemy import func, insert, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.fakes.openai_server import FakeOpenAI  # noqa: E402
from tests.fakes.servers import ServerThread  # noqa: E402

from sessiongate.app import create_app  # noqa: E402
from sessiongate.config import Settings  # noqa: E402
from sessiongate.sessions import cleanup_expired_sessions  # noqa: E402
from sessiongate.store import DbSession, create_engine, create_sessionmaker, migrate  # noqa: E402
from sessiongate.store.admin import encode_cursor, list_sessions, stats  # noqa: E402
from sessiongate.store.models import (  # noqa: E402
    ConversationRow,
    MessageRow,
    SessionRow,
    new_id,
)
from sessiongate.store.queries import new_session_name  # noqa: E402

T = TypeVar("T")

SECRET = "bench-secret-key-0123456789abcdefghijklmnopqrstuvwxyz"
BENCH_DATABASE = "sessiongate_bench"
IDLE_TTL = 86400  # seconds; the default SESSIONGATE_SESSION_IDLE_TTL
CLEANUP_BATCH = Settings.model_fields["cleanup_batch_size"].default
CHUNK = 5000  # sessions per bulk insert
RSS_REQUESTS_TURNS = 5  # chat turns sent to the serve process before reading its RSS


# ------------------------------------------------------------------ databases


def _postgres_answers(url: str) -> bool:
    parsed = make_url(url)
    try:
        with socket.create_connection((parsed.host or "127.0.0.1", parsed.port or 5432), 1):
            return True
    except OSError:
        return False


async def _reset_postgres(server_url: str) -> str:
    """Create ``sessiongate_bench`` if missing, wipe its schema; return its URL."""
    admin = create_async_engine(
        make_url(server_url).set(database="postgres"), isolation_level="AUTOCOMMIT"
    )
    async with admin.connect() as conn:
        exists = await conn.scalar(
            text("SELECT 1 FROM pg_database WHERE datname = :name"), {"name": BENCH_DATABASE}
        )
        if not exists:
            await conn.execute(text(f'CREATE DATABASE "{BENCH_DATABASE}"'))
    await admin.dispose()
    url = make_url(server_url).set(database=BENCH_DATABASE)
    engine = create_async_engine(url)
    async with engine.begin() as conn:
        await conn.execute(text("DROP SCHEMA IF EXISTS public CASCADE"))
        await conn.execute(text("CREATE SCHEMA public"))
    await engine.dispose()
    return url.render_as_string(hide_password=False)


async def _seed(
    engine: AsyncEngine, count: int, *, expired: bool, messages: int, now: datetime
) -> float:
    """Insert ``count`` sessions (live or expired), each with ``messages`` messages in one
    conversation (none if 0), in chunks of ``CHUNK`` sessions; return seconds taken.

    Live sessions were last active within the past half TTL; expired ones 1-2 days past
    their expiry. Assistant messages carry completion tokens, so ``stats`` sums something.
    """
    start = time.perf_counter()
    for first in range(0, count, CHUNK):
        sessions: list[dict[str, Any]] = []
        conversations: list[dict[str, Any]] = []
        rows: list[dict[str, Any]] = []
        for i in range(first, min(first + CHUNK, count)):
            ago = timedelta(seconds=(i * 7919) % (IDLE_TTL // 2))
            if expired:
                ago += timedelta(seconds=IDLE_TTL * 2)
            active = now - ago
            session_id = new_id()
            sessions.append(
                {
                    "id": session_id,
                    "session_name": new_session_name(),
                    "kind": "anonymous",
                    "created_at": active - timedelta(minutes=5),
                    "last_active_at": active,
                    "expires_at": active + timedelta(seconds=IDLE_TTL),
                }
            )
            if messages <= 0:
                continue
            conversation_id = new_id()
            conversations.append(
                {
                    "id": conversation_id,
                    "session_id": session_id,
                    "title": "Benchmark conversation",
                    "created_at": active - timedelta(minutes=5),
                    "updated_at": active,
                }
            )
            for position in range(messages):
                assistant = position % 2 == 1
                rows.append(
                    {
                        "id": new_id(),
                        "session_id": session_id,
                        "conversation_id": conversation_id,
                        "position": position,
                        "role": "assistant" if assistant else "user",
                        "content": ("Echo: " if assistant else "") + f"message {position}",
                        "status": "complete",
                        "created_at": active - timedelta(seconds=messages - position),
                        "prompt_tokens": 10 if assistant else None,
                        "completion_tokens": 5 if assistant else None,
                    }
                )
        async with engine.begin() as conn:
            await conn.execute(insert(SessionRow.__table__), sessions)
            if conversations:
                await conn.execute(insert(ConversationRow.__table__), conversations)
            if rows:
                await conn.execute(insert(MessageRow.__table__), rows)
    seconds = time.perf_counter() - start
    if engine.dialect.name == "postgresql":
        # Autovacuum would analyze the tables in a live database, but not within seconds
        # of a bulk load; without statistics the planner bitmap-scans for the admin
        # page's per-session counts and the page takes ~20x longer.
        async with engine.begin() as conn:  # committed: a rolled-back ANALYZE keeps nothing
            await conn.execute(text("ANALYZE"))
    return seconds


# ------------------------------------------------------------------ timing helpers


async def _median_ms(runs: int, make: Callable[[], Awaitable[object]]) -> float:
    await make()  # warm-up (connection, statement cache)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        await make()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def _percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile of ``values`` (seconds in, same unit out)."""
    ordered = sorted(values)
    rank = max(1, round(pct / 100 * len(ordered) + 0.5 - 1e-9))
    return ordered[min(rank, len(ordered)) - 1]


async def _time_admin(
    sessionmaker: async_sessionmaker[DbSession], runs: int, now: datetime
) -> dict[str, float]:
    """Median ms of an admin page of 50 (first, and deep: from the middle) and of stats,
    each in a new database session, and of a bare ``SELECT 1`` likewise (the floor)."""
    async with sessionmaker() as db:
        total = await db.scalar(select(func.count()).select_from(SessionRow)) or 0
        middle = (
            await db.execute(
                select(SessionRow.last_active_at, SessionRow.id)
                .order_by(SessionRow.last_active_at.desc(), SessionRow.id.desc())
                .offset(total // 2)
                .limit(1)
            )
        ).first()
    cursor = encode_cursor(middle[0], middle[1]) if middle else None

    async def page(after: str | None) -> None:
        async with sessionmaker() as db:
            result = await list_sessions(db, limit=50, after=after, now=now)
            assert len(result.items) == min(50, total)

    async def gateway_stats() -> None:
        async with sessionmaker() as db:
            await stats(db, now=now)

    async def round_trip() -> None:
        async with sessionmaker() as db:
            await db.execute(select(1))

    return {
        "round_trip": await _median_ms(runs, round_trip),
        "page_first": await _median_ms(runs, lambda: page(None)),
        "page_deep": await _median_ms(runs, lambda: page(cursor)),
        "stats": await _median_ms(runs, gateway_stats),
    }


# ------------------------------------------------------------------ chat turns


class _LoopCapture:
    """ASGI wrapper that remembers the event loop the app runs on (for the cleanup)."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.loop: asyncio.AbstractEventLoop | None = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        self.loop = asyncio.get_running_loop()
        await self.app(scope, receive, send)


async def _turns(url: str, count: int, stop: threading.Event | None = None) -> list[float]:
    """Seconds of ``count`` sequential ``POST /api/chat`` turns of one new session.

    With ``stop``, only turns that ended before ``stop`` was set are returned.
    """
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
        (await client.post("/api/session")).raise_for_status()
        times = []
        for i in range(count):
            start = time.perf_counter()
            response = await client.post("/api/chat", json={"message": f"hello {i}"})
            elapsed = time.perf_counter() - start
            response.raise_for_status()
            if stop is not None and stop.is_set():
                break
            times.append(elapsed)
    return times


def _cleanup_in_thread(database_url: str, started: threading.Event) -> threading.Thread:
    """A thread that runs the cleanup on its own engine and event loop."""

    async def run() -> None:
        engine = create_engine(database_url)
        try:
            await cleanup_expired_sessions(
                create_sessionmaker(engine),
                batch_size=CLEANUP_BATCH,
                progress=lambda _: started.set(),
            )
        finally:
            started.set()
            await engine.dispose()

    return threading.Thread(target=asyncio.run, args=(run(),), daemon=True)


async def _time_turns(
    database_url: str, openai_url: str, turns: int, cleanup_in: str
) -> dict[str, Any]:
    """Turn latencies idle and while a cleanup of the stored expired sessions runs."""
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        provider="openai",
        database_url=database_url,
        secret_key=SECRET,
        openai_base_url=f"{openai_url}/v1",
        openai_model="fake-model",
        rate_limit=None,  # one session sends every turn; the limiter is not measured
        cleanup_interval=0,
    )
    app = _LoopCapture(create_app(settings))
    with ServerThread(app) as server:
        await _turns(server.url, 5)  # warm-up
        idle = await _turns(server.url, turns)

        started, done = threading.Event(), threading.Event()
        cleanup_seconds: list[float] = []
        if cleanup_in == "gateway":
            assert app.loop is not None
            sessionmaker = app.app.state.gateway.sessionmaker
            t0 = time.perf_counter()
            future = asyncio.run_coroutine_threadsafe(
                cleanup_expired_sessions(
                    sessionmaker, batch_size=CLEANUP_BATCH, progress=lambda _: started.set()
                ),
                app.loop,
            )

            def finished(_: object) -> None:
                cleanup_seconds.append(time.perf_counter() - t0)
                started.set()
                done.set()

            future.add_done_callback(finished)
        else:
            thread = _cleanup_in_thread(database_url, started)
            t0 = time.perf_counter()
            thread.start()

            def watch() -> None:
                thread.join()
                cleanup_seconds.append(time.perf_counter() - t0)
                done.set()

            threading.Thread(target=watch, daemon=True).start()
        await asyncio.to_thread(started.wait, 600)  # the first batch is deleted
        during = await _turns(server.url, turns, stop=done)
        await asyncio.to_thread(done.wait, 3600)
        if cleanup_in == "gateway":
            result = future.result()
            assert result.sessions > 0, result
    return {"idle": idle, "during": during, "cleanup_concurrent": cleanup_seconds[0]}


# ------------------------------------------------------------------ resident memory


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _vm_field(pid: int, name: str) -> int:
    """A ``/proc/PID/status`` field in kB (VmRSS: resident now, VmHWM: peak)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(name + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{name} not in /proc/{pid}/status")


def _serve_rss(database_url: str, openai_url: str, workdir: str) -> tuple[float, float]:
    """(VmRSS, VmHWM) in MiB of ``sessiongate serve`` after health, a session, a few turns."""
    port = _free_port()
    env = {
        **os.environ,
        "SESSIONGATE_PROVIDER": "openai",
        "SESSIONGATE_OPENAI_BASE_URL": f"{openai_url}/v1",
        "SESSIONGATE_OPENAI_MODEL": "fake-model",
        "SESSIONGATE_DATABASE_URL": database_url,
        "SESSIONGATE_SECRET_KEY": SECRET,
        "SESSIONGATE_CLEANUP_INTERVAL": "0",
    }
    command = [str(ROOT / ".venv/bin/sessiongate"), "serve", "--port", str(port)]
    command += ["--log-level", "warning"]
    process = subprocess.Popen(command, env=env, cwd=workdir)  # cwd: no stray .env
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        with httpx.Client(base_url=url, timeout=30) as client:
            while True:
                if process.poll() is not None:
                    raise RuntimeError(f"sessiongate serve exited with {process.returncode}")
                try:
                    if client.get("/api/health").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise TimeoutError("sessiongate serve did not answer /api/health")
                time.sleep(0.1)
            client.post("/api/session").raise_for_status()
            for i in range(RSS_REQUESTS_TURNS):
                client.post("/api/chat", json={"message": f"hello {i}"}).raise_for_status()
            client.get("/api/session/info").raise_for_status()
            client.get("/api/health").raise_for_status()
        return _vm_field(process.pid, "VmRSS") / 1024, _vm_field(process.pid, "VmHWM") / 1024
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# ------------------------------------------------------------------ one database


def _step(message: str) -> None:
    print(f"  .. {message}", file=sys.stderr, flush=True)


def _run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def bench_database(
    name: str, database_url: str, openai_url: str, args: argparse.Namespace, workdir: str
) -> dict[str, Any]:
    """Every figure for one database (already empty); see the module docstring."""
    n = args.sessions
    results: dict[str, Any] = {}
    _run(migrate(database_url))

    _step(f"{name}: RSS with an empty store")
    results["rss_empty"] = _serve_rss(database_url, openai_url, workdir)

    async def seed(expired: bool) -> float:
        engine = create_engine(database_url)
        try:
            return await _seed(
                engine, n, expired=expired, messages=args.messages, now=datetime.now(UTC)
            )
        finally:
            await engine.dispose()

    _step(f"{name}: seeding {n} live sessions")
    results["seed"] = _run(seed(expired=False))

    async def admin() -> dict[str, float]:
        engine = create_engine(database_url)
        try:
            return await _time_admin(create_sessionmaker(engine), args.runs, datetime.now(UTC))
        finally:
            await engine.dispose()

    _step(f"{name}: admin page and stats")
    results.update(_run(admin()))

    _step(f"{name}: RSS with {n} idle sessions")
    results["rss_idle"] = _serve_rss(database_url, openai_url, workdir)

    _step(f"{name}: seeding {n} expired sessions, cleaning them")
    _run(seed(expired=True))

    async def cleanup() -> tuple[float, int]:
        engine = create_engine(database_url)
        try:
            start = time.perf_counter()
            result = await cleanup_expired_sessions(
                create_sessionmaker(engine), batch_size=CLEANUP_BATCH
            )
            return time.perf_counter() - start, result.sessions
        finally:
            await engine.dispose()

    results["cleanup"], deleted = _run(cleanup())
    if deleted != n:
        raise RuntimeError(f"cleanup deleted {deleted} sessions, expected {n}")

    _step(f"{name}: seeding {n} expired sessions, chat turns idle and during cleanup")
    _run(seed(expired=True))
    results.update(_run(_time_turns(database_url, openai_url, args.turns, args.cleanup_in)))
    return results


# ------------------------------------------------------------------ report


def _rows(results: dict[str, dict[str, Any]], args: argparse.Namespace) -> Iterator[list[str]]:
    n = args.sessions
    history = f"{args.messages} messages" if args.messages > 0 else "no conversation"

    def each(fmt: Callable[[dict[str, Any]], str]) -> list[str]:
        return [fmt(r) for r in results.values()]

    def turns_ms(values: list[float], pct: float) -> str:
        return f"{_percentile(values, pct) * 1000:.1f} ms" if values else "n/a"

    def ratio(r: dict[str, Any], pct: float) -> str:
        if not r["during"]:
            return "n/a"
        return f"x{_percentile(r['during'], pct) / _percentile(r['idle'], pct):.2f}"

    yield [f"seed {n} live sessions ({history} each)", *each(lambda r: f"{r['seed']:.1f} s")]
    yield ["baseline: SELECT 1 in a new DbSession", *each(lambda r: f"{r['round_trip']:.1f} ms")]
    yield ["admin page of 50, first", *each(lambda r: f"{r['page_first']:.1f} ms")]
    yield ["admin page of 50, deep (middle cursor)", *each(lambda r: f"{r['page_deep']:.1f} ms")]
    yield ["stats", *each(lambda r: f"{r['stats']:.1f} ms")]
    yield [
        f"cleanup {n} expired sessions",
        *each(lambda r: f"{r['cleanup']:.1f} s ({n / r['cleanup']:,.0f}/s)"),
    ]
    yield ["chat turn p50, idle", *each(lambda r: turns_ms(r["idle"], 50))]
    yield ["chat turn p95, idle", *each(lambda r: turns_ms(r["idle"], 95))]
    yield ["chat turn p50, during cleanup", *each(lambda r: turns_ms(r["during"], 50))]
    yield ["chat turn p95, during cleanup", *each(lambda r: turns_ms(r["during"], 95))]
    yield ["ratio p50 / p95 (during / idle)", *each(lambda r: f"{ratio(r, 50)} / {ratio(r, 95)}")]
    yield [
        "turns that ended during cleanup",
        *each(lambda r: f"{len(r['during'])}/{args.turns} in {r['cleanup_concurrent']:.1f} s"),
    ]
    yield ["serve RSS, empty store", *each(lambda r: f"{r['rss_empty'][0]:.1f} MiB")]
    yield [f"serve RSS, {n} idle sessions", *each(lambda r: f"{r['rss_idle'][0]:.1f} MiB")]
    yield [
        "serve RSS difference",
        *each(lambda r: f"{r['rss_idle'][0] - r['rss_empty'][0]:+.1f} MiB"),
    ]
    yield [
        "serve peak (VmHWM) empty / idle",
        *each(lambda r: f"{r['rss_empty'][1]:.0f} / {r['rss_idle'][1]:.0f} MiB"),
    ]


def report(results: dict[str, dict[str, Any]], args: argparse.Namespace) -> None:
    header = ["", *results]
    rows = [header, *_rows(results, args)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    for row in rows:
        cells = [row[0].ljust(widths[0])] + [
            c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)
        ]
        print("  ".join(cells))
    print(
        f"admin and stats: median of {args.runs}; turns: {args.turns} sequential POST /api/chat "
        f"of one session each, fake OpenAI upstream on loopback; cleanup batch {CLEANUP_BATCH}, "
        f"during-cleanup run on the {args.cleanup_in} "
        + ("event loop" if args.cleanup_in == "gateway" else "(separate engine)")
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=100_000)
    parser.add_argument(
        "--messages",
        type=int,
        default=2,
        help="messages in each seeded session's one conversation (0: no conversation)",
    )
    parser.add_argument("--runs", type=int, default=5, help="runs of admin page and stats")
    parser.add_argument("--turns", type=int, default=50, help="chat turns per latency figure")
    parser.add_argument("--databases", default="sqlite,postgres")
    parser.add_argument(
        "--pg-url",
        default=os.environ.get(
            "SESSIONGATE_BENCH_PG_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
        ),
        help=f"a PostgreSQL server; the benchmark uses its database {BENCH_DATABASE}",
    )
    parser.add_argument(
        "--cleanup-in",
        choices=["gateway", "thread"],
        default="gateway",
        help="where the concurrent cleanup runs: the gateway's event loop (as in "
        "production) or a thread of the benchmark with its own engine",
    )
    args = parser.parse_args()
    databases = [d.strip() for d in args.databases.split(",") if d.strip()]

    results: dict[str, dict[str, Any]] = {}
    fake = FakeOpenAI()
    with tempfile.TemporaryDirectory() as tmp, ServerThread(fake.app()) as upstream:
        for name in databases:
            if name == "sqlite":
                url = f"sqlite+aiosqlite:///{tmp}/bench.db"
            elif name == "postgres":
                if not _postgres_answers(args.pg_url):
                    print("postgres: does not answer, skipped", file=sys.stderr)
                    continue
                url = _run(_reset_postgres(args.pg_url))
            else:
                parser.error(f"unknown database {name!r} (sqlite, postgres)")
            results[name] = bench_database(name, url, upstream.url, args, tmp)
            fake.requests.clear()
    if results:
        report(results, args)


if __name__ == "__main__":
    main()
