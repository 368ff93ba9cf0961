"""Shared fixtures: databases (SQLite and PostgreSQL), the fake OpenAI upstream, and
gateways in-process (ASGI) or on a real uvicorn on loopback."""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from sessiongate.app import create_app
from sessiongate.config import Settings
from sessiongate.store import create_engine, create_sessionmaker

from .fakes.openai_server import FakeOpenAI
from .fakes.servers import ServerThread

PG_SERVER_URL = os.environ.get(
    "SESSIONGATE_TEST_PG_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
)
SECRET = "test-secret-key-0123456789abcdefghijklmnopqrstuvwxyz"
# One database per test run (created on first use, dropped at exit), so two runs on one
# server (a developer's and CI's, or two worktrees) never wipe each other's tables.
_RUN_DB = f"sg_test_{os.getpid()}_{uuid.uuid4().hex[:8]}"
PG_URL = str(make_url(PG_SERVER_URL).set(database=_RUN_DB))
_run_db_created = False


def _postgres_answers() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 5432), timeout=1):
            return True
    except OSError:
        return False


async def fresh_postgres() -> str:
    """This run's PostgreSQL database, wiped; skips when PostgreSQL is down, but fails
    under CI."""
    global _run_db_created
    if not _postgres_answers():
        if os.environ.get("CI"):
            pytest.fail("PostgreSQL does not answer on 127.0.0.1:5432")
        pytest.skip("PostgreSQL does not answer on 127.0.0.1:5432")
    if not _run_db_created:
        await _admin_sql(f'CREATE DATABASE "{_RUN_DB}"')
        _run_db_created = True
        atexit.register(_drop_run_database)
    await _reset_postgres(PG_URL)
    return PG_URL


async def _admin_sql(statement: str) -> None:
    engine = create_async_engine(PG_SERVER_URL, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as conn:
            await conn.execute(text(statement))
    finally:
        await engine.dispose()


def _drop_run_database() -> None:
    with contextlib.suppress(Exception):
        asyncio.run(_admin_sql(f'DROP DATABASE IF EXISTS "{_RUN_DB}" WITH (FORCE)'))


async def _reset_postgres(url: str) -> None:
    engine = create_async_engine(url)
    async with engine.begin() as conn:
        await conn.execute(text("DROP SCHEMA IF EXISTS public CASCADE"))
        await conn.execute(text("CREATE SCHEMA public"))
    await engine.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty database: a SQLite file, or this run's PostgreSQL database wiped.

    PostgreSQL is skipped locally when it does not answer, but fails under CI.
    """
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'gateway.db'}"
    return await fresh_postgres()


@pytest.fixture
async def postgres_url() -> str:
    """This run's PostgreSQL database, wiped (skipped locally if it does not answer)."""
    return await fresh_postgres()


REDIS_URL = os.environ.get("SESSIONGATE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


@dataclass(frozen=True)
class RedisSpace:
    """A Redis server and a key prefix of this test's own (its keys are deleted after)."""

    url: str
    prefix: str


@pytest.fixture
async def redis_space() -> AsyncIterator[RedisSpace]:
    """Redis with a fresh key prefix; skipped locally when Redis is down, fails under CI."""
    async with fresh_redis_space() as space:
        yield space


@contextlib.asynccontextmanager
async def fresh_redis_space() -> AsyncIterator[RedisSpace]:
    """See ``redis_space`` (for fixtures that choose their backend by parameter)."""
    from redis.asyncio import Redis

    client = Redis.from_url(REDIS_URL)
    try:
        await client.ping()
    except Exception:
        await client.aclose()
        if os.environ.get("CI"):
            pytest.fail("Redis does not answer on 127.0.0.1:6379")
        pytest.skip("Redis does not answer on 127.0.0.1:6379")
    space = RedisSpace(REDIS_URL, f"sgtest:{uuid.uuid4().hex[:12]}:")
    try:
        yield space
    finally:
        keys = [key async for key in client.scan_iter(match=f"{space.prefix}*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'gateway.db'}"


@pytest.fixture(scope="session")
def fake_openai_server() -> Iterator[tuple[FakeOpenAI, str]]:
    fake = FakeOpenAI()
    with ServerThread(fake.app()) as server:
        yield fake, server.url


@pytest.fixture
def fake_openai(fake_openai_server: tuple[FakeOpenAI, str]) -> FakeOpenAI:
    fake, _ = fake_openai_server
    fake.reset()
    return fake


def make_settings(database_url: str, openai_url: str | None = None, **overrides: Any) -> Settings:
    """Settings for a test gateway; the OpenAI provider points at the fake upstream."""
    values: dict[str, Any] = {
        "database_url": database_url,
        "secret_key": SECRET,
        "provider": "openai",
        "openai_base_url": f"{openai_url}/v1" if openai_url else "http://127.0.0.1:9/v1",
        "openai_model": "fake-model",
        "keepalive_interval": 0.5,
        # Each delta its own frame, so tests can check them one by one; the tests of
        # the interval itself set it.
        "stream_flush_interval": 0.0,
        "idle_timeout": 10.0,
        "turn_timeout": 30.0,
        # Every test client is 127.0.0.1: per-client limits only where a test sets them.
        "session_create_rate_limit": None,
        "anonymous_rate_limit": None,
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@dataclass
class Gateway:
    """An in-process gateway: ``client`` speaks to it without a network."""

    app: Any
    settings: Settings

    def client(self, **kwargs: Any) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            transport=httpx.ASGITransport(app=self.app), base_url="http://gateway", **kwargs
        )

    @property
    def state(self) -> Any:
        return self.app.state.gateway


@contextlib.asynccontextmanager
async def running_gateway(
    database_url: str, openai_url: str | None, **overrides: Any
) -> AsyncIterator[Gateway]:
    """An in-process gateway with its lifespan running (migrations, engine, provider)."""
    settings = make_settings(database_url, openai_url, **overrides)
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        yield Gateway(app, settings)


@pytest.fixture
async def gateway(
    database_url: str, fake_openai_server: tuple[FakeOpenAI, str], fake_openai: FakeOpenAI
) -> AsyncIterator[Gateway]:
    """A gateway on the fake OpenAI upstream, on SQLite and on PostgreSQL."""
    async with running_gateway(database_url, fake_openai_server[1]) as gw:
        yield gw


@pytest.fixture
async def sqlite_gateway(
    sqlite_url: str, fake_openai_server: tuple[FakeOpenAI, str], fake_openai: FakeOpenAI
) -> AsyncIterator[Gateway]:
    """The same gateway, on SQLite only (for tests whose point is not the database)."""
    async with running_gateway(sqlite_url, fake_openai_server[1]) as gw:
        yield gw


@dataclass
class LiveGateway:
    """A gateway served by a real uvicorn on loopback; ``url`` like http://127.0.0.1:PORT."""

    url: str
    settings: Settings
    fake: FakeOpenAI

    async def messages(self, conversation_id: str) -> list[tuple[str, str, str]]:
        """(role, status, content) of a conversation, read straight from the database."""
        from sqlalchemy import select

        from sessiongate.store import MessageRow

        engine = create_engine(self.settings.database_url)
        try:
            async with create_sessionmaker(engine)() as db:
                rows = await db.scalars(
                    select(MessageRow)
                    .where(MessageRow.conversation_id == conversation_id)
                    .order_by(MessageRow.position)
                )
                return [(r.role, r.status, r.content) for r in rows]
        finally:
            await engine.dispose()


@pytest.fixture
def live_gateway(
    request: pytest.FixtureRequest,
    sqlite_url: str,
    fake_openai_server: tuple[FakeOpenAI, str],
    fake_openai: FakeOpenAI,
) -> Iterator[LiveGateway]:
    """A gateway on a real uvicorn; ``@pytest.mark.gateway_settings(**overrides)`` on a
    test changes its settings."""
    _, url = fake_openai_server
    marker = request.node.get_closest_marker("gateway_settings")
    settings = make_settings(sqlite_url, url, **(marker.kwargs if marker else {}))
    with ServerThread(create_app(settings)) as server:
        yield LiveGateway(server.url, settings, fake_openai)


async def wait_until(predicate: Any, *, timeout: float = 10.0, interval: float = 0.02) -> None:
    """Await ``predicate()`` (sync or async) becoming true, failing after ``timeout`` seconds."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(interval)
