"""The engine (store/database.py): private SQLite files, SQLite writes one at a time
without busy errors, PostgreSQL pool settings, and 503 database_unavailable when the
database cannot serve."""

from __future__ import annotations

import asyncio
import socket
import stat
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from sessiongate.errors import DatabaseUnavailable
from sessiongate.store import create_engine, migrate
from sessiongate.store.database import database_unavailable

from ..conftest import running_gateway


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def test_a_new_sqlite_database_and_its_wal_are_private_to_the_owner(tmp_path: Path) -> None:
    path = tmp_path / "data" / "gateway.db"
    url = f"sqlite+aiosqlite:///{path}"
    await migrate(url)
    engine = create_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.exec_driver_sql("CREATE TABLE t (x)")
    finally:
        await engine.dispose()
    assert _mode(path) == 0o600
    for companion in path.parent.glob("gateway.db-*"):
        assert _mode(companion) & 0o077 == 0, companion


async def test_an_existing_database_file_keeps_its_mode(tmp_path: Path) -> None:
    path = tmp_path / "gateway.db"
    path.touch(mode=0o640)
    path.chmod(0o640)
    await migrate(f"sqlite+aiosqlite:///{path}")
    assert _mode(path) == 0o640


def _no_busy_wait(engine: AsyncEngine) -> None:
    """Make SQLite refuse at once ("database is locked") instead of waiting for a lock,
    so any collision between two writers of the engine shows as an error."""

    @event.listens_for(engine.sync_engine, "connect")
    def _busy_timeout_zero(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA busy_timeout=0")
        cursor.close()


async def _table(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        await conn.execute(text("CREATE TABLE t (id INTEGER PRIMARY KEY, n INTEGER)"))


async def test_concurrent_sqlite_write_transactions_of_one_process_take_turns(
    sqlite_url: str,
) -> None:
    engine = create_engine(sqlite_url, pool_size=10, max_overflow=20)
    _no_busy_wait(engine)
    try:
        await _table(engine)

        async def write(n: int) -> None:
            async with engine.connect() as conn:
                await conn.execute(text("SELECT count(*) FROM t"))  # a read: never waits
                await conn.execute(text("INSERT INTO t (n) VALUES (:n)"), {"n": n})
                await asyncio.sleep(0.005)  # others try to write meanwhile
                await conn.execute(text("UPDATE t SET n = n + 1 WHERE n = :n"), {"n": n})
                await conn.commit()

        await asyncio.gather(*(write(n) for n in range(40)))
        async with engine.connect() as conn:
            assert await conn.scalar(text("SELECT count(*) FROM t")) == 40
    finally:
        await engine.dispose()


async def test_a_rolled_back_sqlite_write_lets_the_next_writer_in(sqlite_url: str) -> None:
    engine = create_engine(sqlite_url, pool_timeout=5)
    _no_busy_wait(engine)
    try:
        await _table(engine)
        async with engine.connect() as conn:
            await conn.execute(text("INSERT INTO t (n) VALUES (1)"))
            await conn.rollback()
        async with engine.begin() as conn:
            await conn.execute(text("INSERT INTO t (n) VALUES (2)"))
        async with engine.connect() as conn:
            assert (await conn.execute(text("SELECT n FROM t"))).scalars().all() == [2]
    finally:
        await engine.dispose()


async def test_a_sqlite_writer_waiting_past_the_pool_timeout_is_database_unavailable(
    sqlite_url: str,
) -> None:
    engine = create_engine(sqlite_url, pool_timeout=0.2)
    try:
        await _table(engine)
        async with engine.connect() as holder:
            await holder.execute(text("INSERT INTO t (n) VALUES (1)"))  # holds the writer
            with pytest.raises(DatabaseUnavailable) as exc:
                async with engine.begin() as conn:
                    await conn.execute(text("INSERT INTO t (n) VALUES (2)"))
            assert exc.value.status == 503 and exc.value.retry_after
            await holder.commit()
        async with engine.begin() as conn:  # the writer lock was released by the commit
            await conn.execute(text("INSERT INTO t (n) VALUES (3)"))
    finally:
        await engine.dispose()


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_postgres_refusing_connections_is_database_unavailable() -> None:
    engine = create_engine(f"postgresql+asyncpg://postgres@127.0.0.1:{_closed_port()}/none")
    try:
        with pytest.raises((OSError, DBAPIError)) as raised:
            async with engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
        mapped = database_unavailable(raised.value)
        assert mapped is not None and mapped.code == "database_unavailable"
        assert mapped.retry_after == 5
    finally:
        await engine.dispose()


def test_other_errors_are_not_database_unavailable() -> None:
    assert database_unavailable(ValueError("nope")) is None
    assert database_unavailable(FileNotFoundError("x")) is None


async def test_a_pool_timeout_answers_503_database_unavailable_with_retry_after(
    database_url: str,
) -> None:
    async with running_gateway(
        database_url, None, db_pool_size=1, db_max_overflow=0, db_pool_timeout=0.2
    ) as gw:
        async with gw.state.engine.connect() as held:  # the pool's only connection
            await held.execute(text("SELECT 1"))
            async with gw.client() as client:
                response = await client.post("/api/session")
        assert response.status_code == 503
        assert response.json()["error"]["code"] == "database_unavailable"
        assert response.headers["retry-after"] == "1"
        async with gw.client() as client:  # and it serves again once a connection is free
            assert (await client.post("/api/session")).status_code == 201


@pytest.mark.postgres
async def test_postgres_pool_keeps_its_connections_under_steady_load(postgres_url: str) -> None:
    await migrate(postgres_url)
    engine = create_engine(postgres_url, pool_size=4, max_overflow=0)
    opened = 0

    @event.listens_for(engine.sync_engine.pool, "connect")
    def _opened(*_: Any) -> None:
        nonlocal opened
        opened += 1

    try:

        async def query() -> None:
            async with engine.connect() as conn:
                await conn.execute(text("SELECT 1"))

        for _ in range(10):
            await asyncio.gather(*(query() for _ in range(8)))
        assert opened == 4
    finally:
        await engine.dispose()


@pytest.mark.postgres
async def test_connections_killed_by_postgres_cost_one_503_then_the_pool_recovers(
    postgres_url: str,
) -> None:
    async with running_gateway(postgres_url, None) as gw:
        async with gw.client() as client:
            assert (await client.post("/api/session")).status_code == 201
            # What a PostgreSQL restart does to the pooled connections.
            admin = create_engine(postgres_url)
            try:
                async with admin.connect() as conn:
                    await conn.execute(
                        text(
                            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                        )
                    )
            finally:
                await admin.dispose()
            first = await client.post("/api/session")
            assert first.status_code == 503
            assert first.json()["error"]["code"] == "database_unavailable"
            assert first.headers["retry-after"] == "5"
            assert (await client.post("/api/session")).status_code == 201


async def test_each_sqlite_statement_is_one_trip_to_the_driver_thread(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A SELECT, an UPDATE ... RETURNING and an executemany INSERT each hand one job to
    aiosqlite's thread (SQLAlchemy's stock adapter: three or four), with the same rows,
    rowcounts and errors as ever."""
    import aiosqlite
    from sqlalchemy.exc import IntegrityError

    trips: list[str] = []
    real = aiosqlite.Connection._execute

    async def counted(self: Any, fn: Any, *args: Any, **kwargs: Any) -> Any:
        trips.append(getattr(fn, "__name__", repr(fn)))
        return await real(self, fn, *args, **kwargs)

    engine = create_engine(sqlite_url)
    try:
        async with engine.begin() as conn:
            await conn.exec_driver_sql("CREATE TABLE t (k TEXT PRIMARY KEY, v INTEGER)")
        monkeypatch.setattr(aiosqlite.Connection, "_execute", counted)
        async with engine.connect() as conn:
            trips.clear()
            await conn.exec_driver_sql(
                "INSERT INTO t (k, v) VALUES (?, ?)", [("a", 1), ("b", 2), ("c", 3)]
            )
            assert len(trips) == 1, trips
            trips.clear()
            bumped = await conn.exec_driver_sql(
                "UPDATE t SET v = v + 10 WHERE v >= 2 RETURNING k, v"
            )
            assert sorted(bumped.all()) == [("b", 12), ("c", 13)]
            assert len(trips) == 1, trips
            trips.clear()
            rows = (await conn.exec_driver_sql("SELECT k, v FROM t ORDER BY k")).all()
            assert rows == [("a", 1), ("b", 12), ("c", 13)]
            assert len(trips) == 1, trips
            await conn.commit()  # the writes above: one trip
            assert len(trips) == 2, trips
        trips.clear()
        async with engine.connect() as conn:  # a read, then back to the pool: one trip
            assert (await conn.exec_driver_sql("SELECT count(*) FROM t")).scalar() == 3
        assert len(trips) == 1, trips
        async with engine.connect() as conn:
            changed = await conn.exec_driver_sql("UPDATE t SET v = 0 WHERE v > 10")
            assert changed.rowcount == 2
            with pytest.raises(IntegrityError):
                await conn.exec_driver_sql("INSERT INTO t (k, v) VALUES ('a', 9)")
            await conn.rollback()  # a transaction is open: the rollback is made
        async with engine.connect() as conn:
            rows = (await conn.exec_driver_sql("SELECT k, v FROM t ORDER BY k")).all()
            assert rows == [("a", 1), ("b", 12), ("c", 13)]
    finally:
        await engine.dispose()
