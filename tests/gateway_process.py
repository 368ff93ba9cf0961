"""Real ``sessiongate serve`` processes for tests: their own interpreter, env and stderr.

For what one in-process gateway cannot show: several processes sharing state (metrics
across processes) and what the process writes to its stderr (the log format).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from .conftest import SECRET


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def gateway_env(database_url: str, openai_url: str, **settings: str) -> dict[str, str]:
    """The process environment for a gateway on the fake OpenAI upstream.

    The test runner's own ``SESSIONGATE_*`` and ``PROMETHEUS_MULTIPROC_DIR`` are dropped;
    ``settings`` adds variables as given (e.g. ``SESSIONGATE_LOG_FORMAT="json"``).
    """
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SESSIONGATE_", "COZE_")) and k != "PROMETHEUS_MULTIPROC_DIR"
    }
    env.update(
        SESSIONGATE_DATABASE_URL=database_url,
        SESSIONGATE_SECRET_KEY=SECRET,
        SESSIONGATE_PROVIDER="openai",
        SESSIONGATE_OPENAI_BASE_URL=f"{openai_url}/v1",
        SESSIONGATE_OPENAI_MODEL="fake-model",
        SESSIONGATE_CLEANUP_INTERVAL="0",
        PYTHONUNBUFFERED="1",
    )
    env.update(settings)
    return env


@dataclass
class GatewayProcess:
    """A running ``sessiongate serve``; ``stderr_path`` collects everything it logs."""

    url: str
    process: subprocess.Popen[bytes]
    stderr_path: Path

    def stderr(self) -> str:
        return self.stderr_path.read_text(encoding="utf-8", errors="replace")

    def json_lines(self) -> list[dict[str, Any]]:
        """Every stderr line, parsed as JSON (fails the test on a line that is not)."""
        return [json.loads(line) for line in self.stderr().splitlines() if line.strip()]


@contextlib.contextmanager
def serve_process(
    env: dict[str, str], workdir: Path, *args: str, name: str = "gateway"
) -> Iterator[GatewayProcess]:
    """Start ``sessiongate serve`` on a free loopback port; stop it (SIGINT) on exit.

    Waits until ``/api/health`` answers (bounded: 60 s), failing with its stderr if the
    process exits first.
    """
    port = free_port()
    stderr_path = workdir / f"{name}-{port}.stderr"
    with stderr_path.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "sessiongate.cli", "serve", "--port", str(port), *args],
            env=env,
            cwd=workdir,  # no stray .env from the repository
            stdout=subprocess.DEVNULL,
            stderr=sink,
        )
    gateway = GatewayProcess(f"http://127.0.0.1:{port}", process, stderr_path)
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"gateway exited {process.returncode}:\n{gateway.stderr()}")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{gateway.url}/api/health", timeout=2).status_code < 500:
                    break
            if time.monotonic() > deadline:
                raise TimeoutError(f"gateway did not start:\n{gateway.stderr()}")
            time.sleep(0.05)
        yield gateway
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
