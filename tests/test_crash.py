"""Replies survive a crash: ``kill -9`` of a real ``sessiongate serve`` mid-reply, then a
restart, leaves every interrupted reply with its partial text and status
``interrupted`` — never a user message without its reply."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from .conftest import SECRET, wait_until
from .fakes.openai_server import FakeOpenAI


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Serve:
    """``sessiongate serve`` as a real process on a free loopback port."""

    def __init__(self, env: dict[str, str], cwd: Path) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._log = (cwd / f"serve-{self.port}.log").open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "sessiongate.cli", "serve", "--port", str(self.port)],
            env=env,
            cwd=cwd,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    async def ready(self) -> None:
        async def answers() -> bool:
            assert self.process.poll() is None, "serve exited during start-up"
            try:
                async with httpx.AsyncClient(timeout=1) as client:
                    return (await client.get(f"{self.url}/api/health")).status_code == 200
            except httpx.TransportError:
                return False

        await wait_until(answers, timeout=60, interval=0.1)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()


@pytest.fixture
def serve_env(
    tmp_path: Path, fake_openai_server: tuple[FakeOpenAI, str], fake_openai: FakeOpenAI
) -> Iterator[dict[str, str]]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("SESSIONGATE_")}
    env |= {
        "SESSIONGATE_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'crash.db'}",
        "SESSIONGATE_SECRET_KEY": SECRET,
        "SESSIONGATE_PROVIDER": "openai",
        "SESSIONGATE_OPENAI_BASE_URL": f"{fake_openai_server[1]}/v1",
        "SESSIONGATE_OPENAI_MODEL": "fake-model",
        "SESSIONGATE_REPLY_SAVE_INTERVAL": "0.1",
        "SESSIONGATE_LOCK_TTL": "1",
    }
    yield env


async def test_replies_cut_by_kill_9_come_back_interrupted_with_their_text(
    serve_env: dict[str, str], tmp_path: Path, fake_openai: FakeOpenAI
) -> None:
    fake_openai.behaviour.chunk_delay = 0.05
    fake_openai.behaviour.chunk_size = 2
    fake_openai.behaviour.reply = lambda _: "abcdefghij" * 40  # ~10 s
    server = Serve(serve_env, tmp_path)
    try:
        await server.ready()
        clients = [httpx.AsyncClient(base_url=server.url, timeout=30) for _ in range(3)]
        streams = []
        conversations = []
        for client in clients:
            token = (await client.post("/api/session")).json()["token"]
            client.headers["Authorization"] = f"Bearer {token}"
            stream = client.stream("POST", "/api/chat/stream", json={"message": "tell me"})
            response = await stream.__aenter__()
            lines = response.aiter_lines()
            async for line in lines:
                if line.startswith("data: "):
                    conversations.append(json.loads(line[6:])["conversation_id"])
                    break
            streams.append((stream, lines))

        async def saved_while_growing() -> bool:
            for client, conversation in zip(clients, conversations, strict=True):
                page = (await client.get(f"/api/conversations/{conversation}/messages")).json()
                reply = page["messages"][-1]
                if reply["status"] != "streaming" or len(reply["content"]) < 10:
                    return False
            return True

        await wait_until(saved_while_growing, timeout=20)
        server.process.send_signal(signal.SIGKILL)
        server.process.wait()
        for stream, lines in streams:
            with pytest.raises(httpx.HTTPError):
                async for _ in lines:
                    pass
            await stream.__aexit__(None, None, None)
        for client in clients:
            await client.aclose()
    finally:
        server.stop()

    restarted = Serve(serve_env, tmp_path)
    try:
        await restarted.ready()
        async with httpx.AsyncClient(base_url=restarted.url, timeout=30) as client:
            for token_client, conversation in zip(clients, conversations, strict=True):
                headers = {"Authorization": token_client.headers["Authorization"]}

                async def interrupted(
                    conversation: str = conversation, headers: dict[str, str] = headers
                ) -> bool:
                    page = await client.get(
                        f"/api/conversations/{conversation}/messages", headers=headers
                    )
                    return page.json()["messages"][-1]["status"] == "interrupted"

                await wait_until(interrupted, timeout=20)
                page = (
                    await client.get(f"/api/conversations/{conversation}/messages", headers=headers)
                ).json()["messages"]
                assert [m["role"] for m in page] == ["user", "assistant"]
                assert page[1]["content"].startswith("abcdefghij")
                assert page[1]["error_code"] == "interrupted"
                # The next turn works and its history holds no two user messages in a row.
                fake_openai.behaviour.chunk_delay = 0
                again = await client.post(
                    "/api/chat",
                    json={"message": "again", "conversation_id": conversation},
                    headers=headers,
                )
                assert again.status_code == 200
                roles = [m["role"] for m in fake_openai.requests[-1].messages[1:]]
                assert roles == ["user", "assistant", "user"]
    finally:
        restarted.stop()
