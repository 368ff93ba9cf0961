"""A real fleet for tests (and benchmarks): N ``sessiongate serve`` processes behind HAProxy.

Everything here runs as real processes on 127.0.0.1 free ports: each replica is
``python -m sessiongate.cli serve`` (optionally ``--workers N``), the balancer is Debian's
``haproxy`` with the shipped ``deploy/haproxy.cfg``, and Coze is the protocol-faithful
fake (``tests/fakes/coze_server.py``) on a thread of the test process, on the wall clock
because the replicas sign their JWTs with it.

Reuse from a benchmark::

    with serve_fake_coze(make_fake_coze(public_pem)) as coze, run_fleet(
        workdir, gateway_environment(database_url=..., **coze_environment(coze, key_path))
    ) as fleet:
        ...  # fleet.url is the balancer

Every process started is stopped on every path (SIGTERM, then SIGKILL of its process
group after a bounded wait); every wait is bounded.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass, field
from http.cookiejar import CookieJar, DefaultCookiePolicy
from pathlib import Path
from typing import Any

import httpx
import pytest

from sessiongate.coze.keys import generate_keypair

from ..conftest import SECRET, RedisSpace, fresh_postgres, fresh_redis_space
from ..fakes.coze_server import FakeCoze, Switches, serve_fake_coze

REPO = Path(__file__).resolve().parents[2]
HAPROXY_CONFIG = REPO / "deploy" / "haproxy.cfg"
CLIENT_ID = "1170000000042"
PUBLIC_KEY_ID = "kid-fleet-0001"
ADMIN_TOKEN = "fleet-admin-token-0123456789abcdef"
#: The header the shipped HAProxy config adds: which replica (server name) answered.
REPLICA_HEADER = "x-sessiongate-replica"
START_TIMEOUT = 120.0  # seconds for a replica to import, migrate and answer /api/health
STOP_TIMEOUT = 20.0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def haproxy_binary() -> str | None:
    """Debian's haproxy (``scripts/ensure-haproxy.sh`` installs it), or None."""
    return shutil.which("haproxy") or (
        "/usr/sbin/haproxy" if Path("/usr/sbin/haproxy").exists() else None
    )


def _tail(path: Path, lines: int = 60) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"


@dataclass
class _Process:
    """A child process in its own process group, logging to ``log_path``."""

    name: str
    log_path: Path
    process: subprocess.Popen[bytes] | None = None

    def _spawn(self, argv: list[str], env: Mapping[str, str], cwd: Path) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            log.write(f"\n--- start {' '.join(argv)}\n".encode())
            log.flush()
            self.process = subprocess.Popen(
                argv,
                env=dict(env),
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own group: workers go down with it
            )

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL the whole process group at once (a crash, as far as anyone can tell)."""
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=STOP_TIMEOUT)

    def stop(self) -> None:
        """SIGTERM and wait (bounded), then SIGKILL the group; safe to call twice."""
        if self.process is None:
            return
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                pass
        # Whatever is left of the group (uvicorn workers of a killed supervisor).
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=STOP_TIMEOUT)

    def log_tail(self, lines: int = 60) -> str:
        return _tail(self.log_path, lines)


@dataclass
class ServeProcess(_Process):
    """One ``sessiongate serve`` on 127.0.0.1:``port``."""

    port: int = 0
    env: dict[str, str] = field(default_factory=dict)
    workdir: Path = Path(".")
    workers: int = 1

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def spawn(self) -> None:
        """Start the process; do not wait for it."""
        argv = [
            sys.executable, "-m", "sessiongate.cli", "serve",
            "--host", "127.0.0.1", "--port", str(self.port),
            "--workers", str(self.workers), "--graceful-timeout", "3",
            "--log-level", "warning",
        ]  # fmt: skip
        self._spawn(argv, self.env, self.workdir)

    def start(self, *, timeout: float = START_TIMEOUT) -> None:
        """Start it and wait until ``/api/health`` answers 200 (bounded)."""
        self.spawn()
        wait_healthy(self, self.url, timeout=timeout)

    def restart(self) -> None:
        self.stop()
        self.start()


@dataclass
class Balancer(_Process):
    """HAProxy with the shipped config, listening on 127.0.0.1:``port``."""

    port: int = 0
    config_path: Path = HAPROXY_CONFIG

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, replicas: list[ServeProcess], *, timeout: float = 30.0) -> None:
        binary = haproxy_binary()
        if binary is None:
            pytest.fail("haproxy is not installed: run scripts/ensure-haproxy.sh (make test does)")
        env = {k: v for k, v in os.environ.items() if not k.startswith("SESSIONGATE_")}
        env["SESSIONGATE_LB_BIND"] = f"127.0.0.1:{self.port}"
        for index, replica in enumerate(replicas, start=1):
            env[f"SESSIONGATE_REPLICA_{index}"] = f"127.0.0.1:{replica.port}"
        check = subprocess.run(
            [binary, "-c", "-q", "-f", str(self.config_path)],
            env=env, capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        assert check.returncode == 0, f"haproxy rejects {self.config_path}: {check.stderr}"
        self._spawn([binary, "-db", "-f", str(self.config_path)], env, self.config_path.parent)
        wait_healthy(self, self.url, timeout=timeout)


def wait_healthy(owner: _Process, url: str, *, timeout: float) -> None:
    """Poll ``url``/api/health until 200; fail with the process's log if it dies or times out."""
    deadline = time.monotonic() + timeout
    while True:
        if not owner.alive:
            raise RuntimeError(f"{owner.name} exited during start-up:\n{owner.log_tail()}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/api/health", timeout=5).status_code == 200:
                return
        if time.monotonic() > deadline:
            raise TimeoutError(f"{owner.name} not healthy after {timeout}s:\n{owner.log_tail()}")
        time.sleep(0.1)


def render_haproxy_config(template: Path, replicas: int, out: Path) -> Path:
    """The shipped config with one ``server`` line per replica (as gw1's line, renumbered)."""
    lines = template.read_text().splitlines()
    servers = [i for i, line in enumerate(lines) if re.match(r"\s+server gw\d+ ", line)]
    assert servers, f"no `server gwN` lines in {template}"
    first = lines[servers[0]]
    generated = [
        first.replace("gw1", f"gw{n}").replace("REPLICA_1", f"REPLICA_{n}")
        for n in range(1, replicas + 1)
    ]
    lines[servers[0] : servers[-1] + 1] = generated
    out.write_text("\n".join(lines) + "\n")
    return out


@dataclass
class Fleet:
    """``replicas`` serve processes and, unless disabled, HAProxy in front (``url``)."""

    replicas: list[ServeProcess]
    balancer: Balancer | None
    label: str = "fleet"  # for the printed figures

    @property
    def url(self) -> str:
        """Where clients go: the balancer, or the only replica when there is none."""
        return self.balancer.url if self.balancer else self.replicas[0].url

    def ensure_running(self) -> None:
        """Restart any replica a previous test killed (and wait until the balancer sees it)."""
        restarted = False
        for replica in self.replicas:
            if not replica.alive:
                replica.start()
                restarted = True
        if restarted and self.balancer is not None:
            wait_balancer_sees_all(self)

    def logs(self) -> str:
        parts = [f"== {p.name}\n{p.log_tail()}" for p in self.replicas]
        if self.balancer:
            parts.append(f"== {self.balancer.name}\n{self.balancer.log_tail(30)}")
        return "\n".join(parts)


def wait_balancer_sees_all(fleet: Fleet, *, timeout: float = 30.0) -> None:
    """Until health requests through the balancer have been answered by every replica."""
    assert fleet.balancer is not None
    expected = {f"gw{n}" for n in range(1, len(fleet.replicas) + 1)}
    seen: set[str] = set()
    deadline = time.monotonic() + timeout
    while seen != expected:
        with contextlib.suppress(httpx.HTTPError):
            response = httpx.get(f"{fleet.url}/api/health", timeout=5)
            if response.status_code == 200:
                seen.add(response.headers.get(REPLICA_HEADER, "?"))
        if time.monotonic() > deadline:
            raise TimeoutError(f"balancer reached only {sorted(seen)}:\n{fleet.logs()}")
        time.sleep(0.05)


@contextlib.contextmanager
def run_fleet(
    workdir: Path,
    env: Mapping[str, str],
    *,
    replicas: int = 2,
    workers: int = 1,
    balancer: bool = True,
    haproxy_config: Path = HAPROXY_CONFIG,
) -> Iterator[Fleet]:
    """Start ``replicas`` × ``sessiongate serve --workers workers`` (+ HAProxy); stop all after.

    ``env`` is each replica's whole environment (see ``gateway_environment``); replicas
    run in ``workdir`` (so no developer ``.env`` is read) and log to ``workdir/*.log``.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    fleet = Fleet(
        replicas=[
            ServeProcess(
                name=f"replica-{n}",
                log_path=workdir / f"replica-{n}.log",
                port=free_port(),
                env=dict(env),
                workdir=workdir,
                workers=workers,
            )
            for n in range(1, replicas + 1)
        ],
        balancer=None,
    )
    with contextlib.ExitStack() as stack:
        for replica in fleet.replicas:
            stack.callback(replica.stop)
        # Started together, as an orchestrator would: they race to migrate and to
        # generate the secret key, which must be harmless.
        for replica in fleet.replicas:
            replica.spawn()
        for replica in fleet.replicas:
            wait_healthy(replica, replica.url, timeout=START_TIMEOUT)
        if balancer:
            config = render_haproxy_config(haproxy_config, replicas, workdir / "haproxy.cfg")
            fleet.balancer = Balancer(
                name="haproxy", log_path=workdir / "haproxy.log", port=free_port(),
                config_path=config,
            )  # fmt: skip
            stack.callback(fleet.balancer.stop)
            fleet.balancer.start(fleet.replicas)
            wait_balancer_sees_all(fleet)
        yield fleet


def gateway_environment(**settings: str) -> dict[str, str]:
    """This process's environment without any SESSIONGATE_/COZE_ variable, plus ``settings``.

    Keys of ``settings`` are full variable names (``SESSIONGATE_DATABASE_URL=...``).
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SESSIONGATE_", "COZE_"))}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(settings)
    return env


def make_fake_coze(public_pem: bytes) -> FakeCoze:
    """A fake Coze on the wall clock (the replicas sign their JWTs with it)."""
    return FakeCoze(clock=time.time, public_keys={PUBLIC_KEY_ID: public_pem}, client_id=CLIENT_ID)


def coze_environment(fake: FakeCoze, private_key: Path, provider: str) -> dict[str, str]:
    """COZE_* settings for ``provider`` (``coze-workflow``: a workflow in an app) on ``fake``."""
    env = {
        "SESSIONGATE_PROVIDER": provider,
        "COZE_API_BASE": fake.url,
        "COZE_AUTH_MODE": "OAUTH_JWT",
        "COZE_OAUTH_CLIENT_ID": CLIENT_ID,
        "COZE_OAUTH_PUBLIC_KEY_ID": PUBLIC_KEY_ID,
        "COZE_OAUTH_PRIVATE_KEY_FILE": str(private_key),
    }
    if provider == "coze-workflow":
        env |= {"COZE_WORKFLOW_ID": fake.workflow_id, "COZE_APP_ID": fake.app_id}
    else:
        env |= {"COZE_BOT_ID": fake.bot_id}
    return env


#: Settings every fleet in these tests shares (limits sized for the scenarios).
FLEET_SETTINGS = {
    "SESSIONGATE_ADMIN_TOKEN": ADMIN_TOKEN,
    "SESSIONGATE_CLEANUP_INTERVAL": "0",  # cleanups only when a test asks for one
    "SESSIONGATE_CLEANUP_BATCH_SIZE": "20",
    "SESSIONGATE_RATE_LIMIT": "20/minute",
    "SESSIONGATE_TENANT_RATE_LIMIT": "15/minute",
    # Every test client is 127.0.0.1: per-address limits would count them all as one.
    "SESSIONGATE_SESSION_CREATE_RATE_LIMIT": "",
    "SESSIONGATE_ANONYMOUS_RATE_LIMIT": "",
    # As in production: believe X-Forwarded-For from the balancer (here on loopback).
    "SESSIONGATE_TRUSTED_PROXIES": '["127.0.0.1"]',
    "SESSIONGATE_MAX_CONCURRENT_TURNS": "40",
    "SESSIONGATE_KEEPALIVE_INTERVAL": "2",
    "SESSIONGATE_IDLE_TIMEOUT": "20",
    "SESSIONGATE_TURN_TIMEOUT": "60",
    # A dead replica's session locks are given up after this long (the kill scenario).
    "SESSIONGATE_LOCK_TTL": "3",
}


#: Measured figures of this run, printed at the end (docs/deploy.md quotes them).
FIGURES: list[str] = []


def figure(fleet: Fleet, text: str) -> None:
    """Record one measured figure of ``fleet`` for the run's summary."""
    FIGURES.append(f"[{fleet.label}] {text}")


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if FIGURES:
        terminalreporter.section("fleet figures")
        for line in FIGURES:
            terminalreporter.write_line(line)


# -- fixtures ----------------------------------------------------------------------------


@dataclass(frozen=True)
class CozeKeys:
    private_path: Path
    public_pem: bytes


@pytest.fixture(scope="session")
def fleet_coze_keys(tmp_path_factory: pytest.TempPathFactory) -> CozeKeys:
    private_path, public_path = generate_keypair(tmp_path_factory.mktemp("fleet-keys"))
    return CozeKeys(private_path, public_path.read_bytes())


@pytest.fixture(scope="session")
def fleet_coze_server(fleet_coze_keys: CozeKeys) -> Iterator[FakeCoze]:
    with serve_fake_coze(make_fake_coze(fleet_coze_keys.public_pem)) as fake:
        yield fake


@pytest.fixture
def fleet_coze(fleet_coze_server: FakeCoze) -> Iterator[FakeCoze]:
    """The fleet's fake Coze; switches a test sets are back to normal afterwards.

    Tokens and records are kept across tests (the replicas cache tokens): assert on the
    session_names a test created, not on totals.
    """
    fleet_coze_server.switches = Switches()
    yield fleet_coze_server
    fleet_coze_server.switches = Switches()


@contextlib.contextmanager
def redis_space_for_module() -> Iterator[RedisSpace]:
    """``fresh_redis_space`` (a key prefix of its own, keys deleted after) for sync fixtures."""
    import asyncio

    loop = asyncio.new_event_loop()
    manager = fresh_redis_space()
    try:
        space = loop.run_until_complete(manager.__aenter__())
        try:
            yield space
        finally:
            loop.run_until_complete(manager.__aexit__(None, None, None))
    finally:
        loop.close()


def require_haproxy() -> None:
    if haproxy_binary() is None:
        if os.environ.get("CI"):
            pytest.fail("haproxy is missing: make test installs it (scripts/ensure-haproxy.sh)")
        pytest.skip("haproxy is missing: run scripts/ensure-haproxy.sh")


@pytest.fixture(scope="module")
def pg_fleet(
    tmp_path_factory: pytest.TempPathFactory, fleet_coze_server: FakeCoze, fleet_coze_keys: CozeKeys
) -> Iterator[Fleet]:
    """Two replicas on this run's PostgreSQL database and Redis, behind HAProxy (coze-workflow)."""
    import asyncio

    require_haproxy()
    database_url = asyncio.run(fresh_postgres())
    with redis_space_for_module() as redis:
        env = gateway_environment(
            SESSIONGATE_DATABASE_URL=database_url,
            SESSIONGATE_REDIS_URL=redis.url,
            SESSIONGATE_REDIS_PREFIX=redis.prefix,
            SESSIONGATE_SECRET_KEY=SECRET,
            **FLEET_SETTINGS,
            **coze_environment(fleet_coze_server, fleet_coze_keys.private_path, "coze-workflow"),
        )
        with run_fleet(tmp_path_factory.mktemp("pg-fleet"), env, replicas=2) as fleet:
            fleet.label = "2 replicas + HAProxy, PostgreSQL + Redis"
            yield fleet


@pytest.fixture
def fleet(pg_fleet: Fleet, fleet_coze: FakeCoze) -> Fleet:
    """The PostgreSQL fleet with every replica up (a test may have killed one)."""
    pg_fleet.ensure_running()
    return pg_fleet


@pytest.fixture(scope="module")
def sqlite_workers(
    tmp_path_factory: pytest.TempPathFactory, fleet_coze_server: FakeCoze, fleet_coze_keys: CozeKeys
) -> Iterator[Fleet]:
    """One ``serve --workers 2`` on one SQLite file, no Redis, no secret key set."""
    workdir = tmp_path_factory.mktemp("sqlite-workers")
    env = gateway_environment(
        SESSIONGATE_DATABASE_URL=f"sqlite+aiosqlite:///{workdir / 'gateway.db'}",
        **FLEET_SETTINGS,
        **coze_environment(fleet_coze_server, fleet_coze_keys.private_path, "coze-workflow"),
    )
    with run_fleet(workdir, env, replicas=1, workers=2, balancer=False) as fleet:
        fleet.label = "serve --workers 2, SQLite"
        yield fleet


@pytest.fixture
def workers_fleet(sqlite_workers: Fleet, fleet_coze: FakeCoze) -> Fleet:
    sqlite_workers.ensure_running()
    return sqlite_workers


@pytest.fixture(scope="module")
def sqlite_workers_redis(
    tmp_path_factory: pytest.TempPathFactory, fleet_coze_server: FakeCoze, fleet_coze_keys: CozeKeys
) -> Iterator[Fleet]:
    """One ``serve --workers 2`` on one SQLite file with Redis (what needs Redis to be shared:
    the Coze token cache and rate limits)."""
    workdir = tmp_path_factory.mktemp("sqlite-workers-redis")
    with redis_space_for_module() as redis:
        env = gateway_environment(
            SESSIONGATE_DATABASE_URL=f"sqlite+aiosqlite:///{workdir / 'gateway.db'}",
            SESSIONGATE_REDIS_URL=redis.url,
            SESSIONGATE_REDIS_PREFIX=redis.prefix,
            **FLEET_SETTINGS,
            **coze_environment(fleet_coze_server, fleet_coze_keys.private_path, "coze-workflow"),
        )
        with run_fleet(workdir, env, replicas=1, workers=2, balancer=False) as fleet:
            fleet.label = "serve --workers 2, SQLite + Redis"
            yield fleet


@pytest.fixture
def workers_redis_fleet(sqlite_workers_redis: Fleet, fleet_coze: FakeCoze) -> Fleet:
    sqlite_workers_redis.ensure_running()
    return sqlite_workers_redis


# -- a client for the scenarios ----------------------------------------------------------


@dataclass
class StreamResult:
    """What one ``POST /api/chat/stream`` (or reattach) gave the client."""

    status: int
    replica: str | None
    frames: list[dict[str, Any]] = field(default_factory=list)
    body: Any = None  # the JSON body of a refusal
    cut: str | None = None  # the transport error if the stream ended without done/error
    lines: AsyncIterator[str] | None = None  # the response's lines, read so far

    @property
    def text(self) -> str:
        return "".join(f.get("content", "") for f in self.frames if f.get("type") == "message")

    @property
    def last(self) -> dict[str, Any]:
        return self.frames[-1] if self.frames else {}

    @property
    def finished(self) -> bool:
        """The stream ended the way the contract says: a final done or error frame."""
        return self.last.get("type") in ("done", "error")


async def read_sse(response: httpx.Response, result: StreamResult, *, until: int = 0) -> None:
    """Append the ``data:`` frames of ``response`` to ``result`` (all, or ``until`` message frames).

    Call again with the same ``result`` to read on. A transport error ends the reading
    and is kept in ``result.cut``.
    """
    if result.lines is None:
        result.lines = response.aiter_lines()
    messages = 0
    try:
        async for line in result.lines:
            if not line.startswith("data:"):
                continue
            frame = json.loads(line[5:].strip())
            result.frames.append(frame)
            if frame.get("type") == "message":
                messages += 1
                if until and messages >= until:
                    return
            if frame.get("type") in ("done", "error"):
                return
    except httpx.TransportError as exc:
        result.cut = f"{type(exc).__name__}: {exc}"


class GatewayClient:
    """A session's client: ``await open_session()`` then turns, through ``base_url``."""

    def __init__(self, http: httpx.AsyncClient, base_url: str) -> None:
        self.http = http
        self.base_url = base_url
        self.token: str | None = None
        self.session_id: str | None = None

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    async def open_session(self) -> GatewayClient:
        response = await self.http.post(f"{self.base_url}/api/session")
        assert response.status_code in (200, 201), response.text
        body = response.json()
        self.token, self.session_id = body["token"], body["session_id"]
        return self

    async def new_conversation(self) -> str:
        response = await self.http.post(
            f"{self.base_url}/api/conversations", json={}, headers=self.headers
        )
        assert response.status_code in (200, 201), response.text
        body = response.json()
        return str(body.get("id") or body["conversation"]["id"])

    async def chat(self, message: str, conversation_id: str | None = None) -> httpx.Response:
        payload: dict[str, Any] = {"message": message}
        if conversation_id:
            payload["conversation_id"] = conversation_id
        return await self.http.post(f"{self.base_url}/api/chat", json=payload, headers=self.headers)

    @contextlib.asynccontextmanager
    async def open_stream(
        self, message: str, conversation_id: str | None = None, *, base_url: str | None = None
    ) -> AsyncIterator[tuple[httpx.Response, StreamResult]]:
        payload: dict[str, Any] = {"message": message}
        if conversation_id:
            payload["conversation_id"] = conversation_id
        async with self.http.stream(
            "POST",
            f"{base_url or self.base_url}/api/chat/stream",
            json=payload,
            headers=self.headers,
        ) as response:
            result = StreamResult(response.status_code, response.headers.get(REPLICA_HEADER))
            if response.status_code != 200:
                await response.aread()
                result.body = _json_or_text(response)
            yield response, result

    async def stream(self, message: str, conversation_id: str | None = None) -> StreamResult:
        async with self.open_stream(message, conversation_id) as (response, result):
            if response.status_code == 200:
                await read_sse(response, result)
        return result

    async def reattach(self, conversation_id: str, *, base_url: str | None = None) -> StreamResult:
        """``GET /api/conversations/{id}/reply`` to the end (contract 5)."""
        async with self.http.stream(
            "GET",
            f"{base_url or self.base_url}/api/conversations/{conversation_id}/reply",
            headers=self.headers,
        ) as response:
            result = StreamResult(response.status_code, response.headers.get(REPLICA_HEADER))
            if response.status_code != 200:
                await response.aread()
                result.body = _json_or_text(response)
                return result
            await read_sse(response, result)
        return result

    async def messages(self, conversation_id: str) -> list[dict[str, Any]]:
        response = await self.http.get(
            f"{self.base_url}/api/conversations/{conversation_id}/messages",
            params={"limit": 200},
            headers=self.headers,
        )
        assert response.status_code == 200, response.text
        return list(response.json()["messages"])


def _json_or_text(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return response.text


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client with generous, bounded timeouts (no cookies: bearer tokens only)."""
    async with httpx.AsyncClient(
        cookies=CookieJar(policy=DefaultCookiePolicy(allowed_domains=[])),
        timeout=httpx.Timeout(90.0, connect=10.0),
        limits=httpx.Limits(max_connections=100, max_keepalive_connections=20),
    ) as client:
        yield client
