"""The database engine and migrations.

SQLite (the default, through aiosqlite) runs in WAL mode with foreign keys on. Readers
never wait (WAL), and the writes of one process go one transaction at a time through an
``asyncio.Lock`` (``SQLiteSerializedWrites``): a second writer awaits the first one's
commit instead of sleeping in SQLite's busy handler. Between processes sharing one file
SQLite's own lock and ``busy_timeout`` still decide. Each statement is one trip to
aiosqlite's thread (``_OneTripCursor``), not the three or four of SQLAlchemy's adapter.
PostgreSQL runs through asyncpg with a fixed pool (``pool_size`` connections kept
open; by default no overflow connections, which would be opened under load and closed
on return — churn; ``pool_timeout`` seconds to wait for one), without an SSL round trip
on loopback.

``database_unavailable`` maps "the database refused us / no connection came free in
time" to ``DatabaseUnavailable`` (503 with Retry-After); the API's error handler uses it.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import gc
import json
import os
import signal
import sqlite3
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import event, exc
from sqlalchemy.dialects import registry
from sqlalchemy.dialects.sqlite.aiosqlite import (
    AsyncAdapt_aiosqlite_connection,
    AsyncAdapt_aiosqlite_cursor,
    AsyncAdapt_aiosqlite_dbapi,
    SQLiteDialect_aiosqlite,
)
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.ext.asyncio import AsyncConnection as DbConnection
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlalchemy.ext.asyncio import AsyncSession as DbSession
from sqlalchemy.util import await_only, immutabledict

from ..errors import DatabaseUnavailable

_MIGRATIONS = Path(__file__).parent / "migrations"

#: Defaults of SESSIONGATE_DB_POOL_SIZE / _DB_MAX_OVERFLOW / _DB_POOL_TIMEOUT (seconds).
POOL_SIZE = 20
MAX_OVERFLOW = 0
POOL_TIMEOUT = 10.0

_LOOPBACK = {"127.0.0.1", "::1", "localhost"}
_WRITES = ("INSERT", "UPDATE", "DELETE", "REPLACE", "BEGIN")


def _driver_connection(connection: Any) -> Any:
    """The driver-level connection under a pool proxy (or ``connection`` itself)."""
    return getattr(connection, "dbapi_connection", connection)


def _run_statement(connection: Any, many: bool, sql: str, parameters: Any) -> tuple[Any, ...]:
    """One statement from start to end, in aiosqlite's thread (``connection`` is the
    ``aiosqlite.Connection``): (description, rowcount, lastrowid, rows)."""
    cursor = connection._conn.cursor()
    try:
        if many:
            cursor.executemany(sql, parameters)
        elif parameters is None:
            cursor.execute(sql)
        else:
            cursor.execute(sql, parameters)
        rows = cursor.fetchall() if cursor.description else []
        return cursor.description, cursor.rowcount, cursor.lastrowid, rows
    finally:
        cursor.close()


class _OneTripCursor(AsyncAdapt_aiosqlite_cursor):
    """SQLAlchemy's aiosqlite cursor, with each statement one trip to aiosqlite's thread.

    The stock adapter makes a trip to open the cursor, one to execute, one to fetch the
    rows and one to close it: three or four hand-overs between the event loop and the
    thread for every statement, each a thread wake-up and a loop wake-up (on this
    project's machine ~0.1 ms of CPU apiece, and a wait for a busy loop each). Here one
    function runs the statement, takes every row and closes the cursor in the thread;
    rows are then served from memory, as the stock adapter does after its fetch. It
    uses ``aiosqlite.Connection._execute``, the queue every aiosqlite method goes
    through (SQLAlchemy's own adapter uses that queue too). Server-side cursors keep
    the stock class.
    """

    __slots__ = ("_meta",)

    def __init__(self, adapt_connection: Any) -> None:  # no trip to open a cursor
        self._adapt_connection = adapt_connection
        self._connection = adapt_connection._connection
        self._cursor = None  # type: ignore[assignment]
        self._soft_closed_memoized = immutabledict()
        self._rows = collections.deque()
        self._meta: tuple[Any, int, int | None] = (None, -1, None)

    @property
    def description(self) -> Any:
        return self._meta[0]

    @property
    def rowcount(self) -> int:
        return self._meta[1]

    @property
    def lastrowid(self) -> Any:
        return self._meta[2]

    async def _async_soft_close(self) -> None:
        return None  # closed in the thread already

    def close(self) -> None:
        self._rows.clear()

    def execute(self, operation: Any, parameters: Any = None) -> None:
        self._trip(False, operation, parameters)

    def executemany(self, operation: Any, seq_of_parameters: Any) -> None:
        self._trip(True, operation, seq_of_parameters)

    def _trip(self, many: bool, operation: Any, parameters: Any) -> None:
        try:
            await_only(self._run(many, operation, parameters))
        except Exception as error:
            self._adapt_connection._handle_exception(error)

    async def _run(self, many: bool, operation: Any, parameters: Any) -> None:
        async with self._adapt_connection._execute_mutex:
            aio = self._connection
            description, rowcount, lastrowid, rows = await aio._execute(
                _run_statement, aio, many, operation, parameters
            )
        self._meta = (description, rowcount, lastrowid)
        self._rows = collections.deque(rows)


class _OneTripConnection(AsyncAdapt_aiosqlite_connection):
    """Cursors of one trip per statement; COMMIT and ROLLBACK make no trip at all when
    no transaction is open (a read, or a connection going back to the pool after its
    COMMIT): ``sqlite3.Connection.in_transaction`` is read in place, with no statement
    of this connection in flight."""

    __slots__ = ()
    _cursor_cls = _OneTripCursor

    def _in_transaction(self) -> bool:
        sqlite = self._connection._connection  # None once closed
        return sqlite is not None and bool(sqlite.in_transaction)

    def rollback(self) -> None:
        if self._in_transaction():
            super().rollback()

    def commit(self) -> None:
        if self._in_transaction():
            super().commit()


class _OneTripDBAPI(AsyncAdapt_aiosqlite_dbapi):
    def connect(self, *arg: Any, **kw: Any) -> _OneTripConnection:
        return _OneTripConnection(self, super().connect(*arg, **kw)._connection)


class SQLiteSerializedWrites(SQLiteDialect_aiosqlite):
    """aiosqlite, with this engine's write transactions taken one at a time.

    pysqlite (under aiosqlite) opens a transaction only at the first INSERT, UPDATE,
    DELETE or REPLACE; that statement first awaits the engine's writer lock, which is
    released once the transaction's COMMIT or ROLLBACK has finished. Reads before it run
    on their own WAL snapshot and never wait. Waiting longer than ``write_wait`` seconds
    raises ``DatabaseUnavailable``; SQLite's busy handler (which sleeps and polls) then
    only ever runs against other processes.
    """

    supports_statement_cache = True

    @classmethod
    def import_dbapi(cls) -> AsyncAdapt_aiosqlite_dbapi:
        return _OneTripDBAPI(__import__("aiosqlite"), __import__("sqlite3"))

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.write_wait = POOL_TIMEOUT
        self._writer = asyncio.Lock()
        self._writing: set[int] = set()  # id() of driver connections holding the lock

    async def _acquire(self) -> None:
        try:
            async with asyncio.timeout(self.write_wait):
                await self._writer.acquire()
        except TimeoutError:
            raise DatabaseUnavailable(
                "The database is busy with other writes; try again shortly.", retry_after=1
            ) from None

    def _before_statement(self, statement: str, context: Any) -> None:
        if context is None or not statement.lstrip()[:7].upper().startswith(_WRITES):
            return
        key = id(_driver_connection(context.root_connection.connection))
        if key not in self._writing:
            await_only(self._acquire())
            self._writing.add(key)

    def _transaction_ended(self, dbapi_connection: Any) -> None:
        key = id(_driver_connection(dbapi_connection))
        if key in self._writing:
            self._writing.discard(key)
            self._writer.release()

    def do_execute(self, cursor: Any, statement: str, parameters: Any, context: Any = None) -> None:
        self._before_statement(statement, context)
        super().do_execute(cursor, statement, parameters, context)  # type: ignore[no-untyped-call]

    def do_executemany(
        self, cursor: Any, statement: str, parameters: Any, context: Any = None
    ) -> None:
        self._before_statement(statement, context)
        super().do_executemany(cursor, statement, parameters, context)  # type: ignore[no-untyped-call]

    def do_commit(self, dbapi_connection: Any) -> None:
        try:
            super().do_commit(dbapi_connection)  # type: ignore[no-untyped-call]
        finally:
            self._transaction_ended(dbapi_connection)

    def do_rollback(self, dbapi_connection: Any) -> None:
        try:
            super().do_rollback(dbapi_connection)  # type: ignore[no-untyped-call]
        finally:
            self._transaction_ended(dbapi_connection)

    def do_close(self, dbapi_connection: Any) -> None:
        try:
            super().do_close(dbapi_connection)  # type: ignore[no-untyped-call]
        finally:
            self._transaction_ended(dbapi_connection)

    def do_terminate(self, dbapi_connection: Any) -> None:
        try:
            super().do_terminate(dbapi_connection)
        finally:
            self._transaction_ended(dbapi_connection)


registry.register("sqlite.sessiongate", __name__, "SQLiteSerializedWrites")


def ensure_private_sqlite_file(database_url: str) -> None:
    """Create a SQLite database file with mode 0600 before SQLite does (it would use 0644).

    Security: the file holds every conversation. SQLite gives its ``-wal`` and ``-shm``
    files the database file's mode. Other URLs, ``:memory:`` and existing files are left
    as they are.
    """
    url = make_url(database_url)
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        return
    path = Path(url.database).resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))


def _use_wal(database_url: str) -> None:
    # WAL is a property of the file: set once here, while migrations hold the migration
    # lock, every later connection finds it set and never has to switch (switching takes
    # a lock that fails at once, without waiting, while another connection reads).
    url = make_url(database_url)
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        return
    with contextlib.closing(sqlite3.connect(url.database, timeout=30)) as connection:
        connection.execute("PRAGMA journal_mode=WAL")


def create_engine(
    database_url: str,
    *,
    pool_size: int = POOL_SIZE,
    max_overflow: int = MAX_OVERFLOW,
    pool_timeout: float = POOL_TIMEOUT,
) -> AsyncEngine:
    """Create the async engine: ``sqlite+aiosqlite://...`` or ``postgresql+asyncpg://...``.

    ``pool_size`` connections stay open; up to ``max_overflow`` more are opened under a
    burst and closed when returned; a request waits at most ``pool_timeout`` seconds
    for one (also the longest a SQLite write waits for the writer lock), then gets
    ``DatabaseUnavailable``. A URL without a database (``sqlite://``) or ``:memory:``
    gets SQLAlchemy's single-connection pool.
    """
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite":
        ensure_private_sqlite_file(database_url)
        engine = _create_sqlite_engine(url, pool_size, max_overflow, pool_timeout)
    else:
        engine = create_async_engine(
            url,
            pool_size=pool_size,
            max_overflow=max_overflow,
            pool_timeout=pool_timeout,
            # No pre-ping: SQLAlchemy's asyncpg ping is BEGIN, ";", ROLLBACK — three
            # round trips on every checkout (7% of the gateway's CPU at 128 users in
            # bench/turns.py). A connection found dead instead fails its request with
            # 503 database_unavailable and the pool is invalidated and refilled.
            pool_pre_ping=False,
            connect_args=_postgres_connect_args(url),
        )
    if os.environ.get("SESSIONGATE_BENCH_SQL_COUNTS"):
        _count_statements(engine.sync_engine, Path(os.environ["SESSIONGATE_BENCH_SQL_COUNTS"]))
    return engine


def _create_sqlite_engine(
    url: URL, pool_size: int, max_overflow: int, pool_timeout: float
) -> AsyncEngine:
    options: dict[str, Any] = {}
    if url.database not in (None, "", ":memory:"):
        options = {
            "pool_size": pool_size,
            "max_overflow": max_overflow,
            "pool_timeout": pool_timeout,
        }
    if url.get_driver_name() == "aiosqlite":
        url = url.set(drivername="sqlite+sessiongate")
    # timeout: seconds SQLite waits for another *process* holding the write lock.
    engine = create_async_engine(url, connect_args={"timeout": 30}, **options)
    dialect = engine.sync_engine.dialect
    if isinstance(dialect, SQLiteSerializedWrites):
        dialect.write_wait = pool_timeout

    @event.listens_for(engine.sync_engine, "connect")
    def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        # The busy timeout first, and WAL only when the file is not in WAL yet: switching
        # the journal mode takes a lock that, taken while another process writes, fails
        # at once ("database is locked") instead of waiting.
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA journal_mode")
        if str(cursor.fetchone()[0]).lower() != "wal":
            # A file nobody migrated yet (migrate_sync sets WAL once for good): switch
            # if no other connection is busy, else stay in rollback mode, equally correct.
            with contextlib.suppress(Exception):
                cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    return engine


def _postgres_connect_args(url: URL) -> dict[str, Any]:
    # asyncpg's default sslmode "prefer" asks for TLS on every new connection and falls
    # back to plain TCP when the server declines: a wasted round trip (and a TLS
    # handshake when it accepts) on a connection that never leaves the host.
    if url.host in _LOOPBACK and not {"ssl", "sslmode"} & set(url.query):
        return {"ssl": False}
    return {}


def database_unavailable(error: BaseException) -> DatabaseUnavailable | None:
    """``DatabaseUnavailable`` (503, Retry-After) if ``error`` means the database cannot
    be reached right now, else None.

    Covers: no pooled connection within ``pool_timeout`` (SQLAlchemy ``TimeoutError``);
    connections refused or reset (``ConnectionError``, raised raw by asyncpg at connect);
    PostgreSQL starting up, shutting down or out of connection slots (SQLSTATE 57P03,
    57P01, 53300); a SQLite file locked by another process past ``busy_timeout``.
    """
    if isinstance(error, DatabaseUnavailable):
        return error
    if isinstance(error, exc.TimeoutError):
        return DatabaseUnavailable(
            "Every database connection is busy; try again shortly.", retry_after=1
        )
    cause: BaseException = error
    if isinstance(error, exc.DBAPIError):
        if error.connection_invalidated:
            return _refused()
        cause = error.orig if error.orig is not None else error
    if isinstance(cause, ConnectionError | TimeoutError):
        return _refused()
    if getattr(cause, "sqlstate", None) in {"57P01", "57P02", "57P03", "53300"}:
        return _refused()
    if isinstance(cause, sqlite3.OperationalError) and "locked" in str(cause):
        return DatabaseUnavailable("The database is locked; try again shortly.", retry_after=1)
    return None


def _refused() -> DatabaseUnavailable:
    return DatabaseUnavailable("The database cannot be reached; try again shortly.", retry_after=5)


def _await_chain(awaitable: Any, depth: int = 40) -> list[str]:
    """file:line of each coroutine or async generator ``awaitable`` is suspended in."""
    lines = []
    while awaitable is not None and depth:
        frame = getattr(awaitable, "cr_frame", None) or getattr(awaitable, "ag_frame", None)
        if frame is not None:
            lines.append(f"{frame.f_code.co_filename}:{frame.f_lineno} {frame.f_code.co_name}")
        awaitable = getattr(awaitable, "cr_await", None) or getattr(awaitable, "ag_await", None)
        depth -= 1
    return lines


def _count_statements(engine: Engine, path: Path) -> None:
    """Benchmark only (``SESSIONGATE_BENCH_SQL_COUNTS=<file>``): count statements,
    transactions, pool checkouts, new connections and the most connections checked out
    at once of ``engine``; SIGUSR1 writes the totals and the statements by text to
    ``path`` as JSON. Off, nothing is attached."""
    counts: Counter[str] = Counter()
    statements: Counter[str] = Counter()

    @event.listens_for(engine, "before_cursor_execute")
    def _statement(*args: Any) -> None:
        counts["statements"] += 1
        statements[args[2]] += 1  # the SQL text, tidied when written out

    collecting: list[float] = []

    def _collection(phase: str, info: dict[str, Any]) -> None:
        # The cyclic garbage collector's runs and their time, by generation.
        if phase == "start":
            collecting[:] = [time.perf_counter()]
        elif collecting:
            generation = info["generation"]
            counts[f"gc{generation}_runs"] += 1
            counts[f"gc{generation}_us"] += int(1e6 * (time.perf_counter() - collecting[0]))

    gc.callbacks.append(_collection)

    @event.listens_for(engine, "begin")
    def _begin(conn: Any) -> None:
        # An autocommit connection (read_engine) opens no transaction on the server.
        if conn.get_execution_options().get("isolation_level") != "AUTOCOMMIT":
            counts["transactions"] += 1

    @event.listens_for(engine.pool, "checkout")
    def _checkout(*_: Any) -> None:
        counts["checkouts"] += 1
        checked_out = getattr(engine.pool, "checkedout", None)
        if checked_out is not None:
            counts["peak_checked_out"] = max(counts["peak_checked_out"], checked_out())

    @event.listens_for(engine.pool, "connect")
    def _connect(*_: Any) -> None:
        counts["connects"] += 1

    def _dump(*_: Any) -> None:
        # Where every task of the process is waiting (a turn that never ends shows its
        # await chain here), written first: the counts file appearing tells the reader
        # this handler's work is done, so none of it lands in a CPU measurement after.
        with contextlib.suppress(RuntimeError), path.with_suffix(".tasks.txt").open("w") as out:
            for task in asyncio.all_tasks():
                out.write(f"--- {task.get_name()}\n")
                for line in _await_chain(task.get_coro()):
                    out.write(f"    {line}\n")
        by_statement: Counter[str] = Counter()
        for text, count in statements.items():
            by_statement[" ".join(text.split())] += count
        data = {**counts, "by_statement": dict(by_statement.most_common())}
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data), encoding="utf-8")
        tmp.replace(path)

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGUSR1, _dump)


def create_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[DbSession]:
    """A factory of database sessions that keep loaded rows usable after commit."""
    return async_sessionmaker(engine, expire_on_commit=False)


def read_engine(engine: AsyncEngine) -> AsyncEngine:
    """``engine`` for one-statement reads outside a transaction (same pool).

    On PostgreSQL its connections run in autocommit: a lookup is one round trip instead
    of three (BEGIN, SELECT, ROLLBACK). SQLite (pysqlite) never opens a transaction for a
    read anyway, and switching its connections to autocommit and back costs more than it
    saves, so there it is ``engine`` itself. Never write through it.
    """
    if engine.dialect.name != "postgresql":
        return engine
    return engine.execution_options(isolation_level="AUTOCOMMIT")


def _alembic_config(database_url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(_MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    cfg.attributes["configure_logger"] = False
    return cfg


def migrate_sync(database_url: str, revision: str = "head") -> None:
    """Apply Alembic migrations up to ``revision``; blocking (runs its own event loop)."""
    ensure_private_sqlite_file(database_url)
    _use_wal(database_url)
    command.upgrade(_alembic_config(database_url), revision)


async def migrate(database_url: str, revision: str = "head") -> None:
    """Apply Alembic migrations from async code (in a worker thread)."""
    await asyncio.to_thread(migrate_sync, database_url, revision)


__all__ = [
    "DbConnection",
    "DbSession",
    "SQLiteSerializedWrites",
    "create_engine",
    "read_engine",
    "create_sessionmaker",
    "database_unavailable",
    "migrate",
    "migrate_sync",
]
