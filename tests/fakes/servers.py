"""Run an ASGI app under a real uvicorn on a loopback port, in a background thread."""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

import uvicorn


class ServerThread:
    """A uvicorn server for ``app`` on 127.0.0.1 (a free port); ``url`` once started.

    Use as a context manager; start-up and shutdown wait for the server, bounded.
    ``options`` are more ``uvicorn.Config`` arguments (e.g. ``server_options(settings)``).
    """

    def __init__(self, app: Any, *, lifespan: str = "on", **options: Any) -> None:
        # IPPROTO_TCP explicitly: asyncio enables TCP_NODELAY only when it sees it, and
        # without it every second response on a kept-alive connection waits ~40 ms.
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self.port = self._sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            app, lifespan=lifespan, log_level="warning", timeout_graceful_shutdown=5, **options
        )
        self.server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self._sock]}, daemon=True
        )

    def __enter__(self) -> ServerThread:
        self._thread.start()
        deadline = time.monotonic() + 120
        while not self.server.started:
            if not self._thread.is_alive():
                raise RuntimeError("server thread died during start-up")
            if time.monotonic() > deadline:
                raise TimeoutError("server did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *_: object) -> None:
        self.server.should_exit = True
        self._thread.join(timeout=30)
        self._sock.close()
