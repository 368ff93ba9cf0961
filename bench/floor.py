"""Benchmark: the floor under a turn's CPU on this machine. The same one-user turns as
``turn_cost.py``, through ``sessiongate serve`` and through a bare relay built from the
gateway's own stack and nothing else.

The relay (a subprocess of this script) is uvicorn with httptools and uvloop, one
Starlette route and a ``StreamingResponse``, one aiohttp pool to the fake Coze workflow
and ``coze.stream.SseParser``: it posts the user's message upstream with a token
exchanged beforehand and relays each answer delta as a ``message`` frame. No session,
no database, no Redis, no admission, limits or lock, no identity check, no
middleware. Its CPU per turn is what the HTTP server, the framework, the upstream
client and JSON cost on this machine before any of the gateway's own work; the
gateway's figure beside it, taken in the same run, says how much of a turn is the
gateway's.

    .venv/bin/python bench/floor.py [--database sqlite|postgres] [--turns 80]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
import turns as bench  # noqa: E402
from turn_cost import _times  # noqa: E402

from sessiongate.coze import generate_keypair  # noqa: E402


def _relay_main(port: int, fake_url: str, token: str) -> None:
    """Serve the bare relay on ``port`` until stopped (``--serve-relay``)."""
    import aiohttp
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import StreamingResponse
    from starlette.routing import Route

    from sessiongate.coze.stream import SseParser

    pool: dict[str, aiohttp.ClientSession] = {}

    async def frames(message: str) -> AsyncIterator[str]:
        if "session" not in pool:
            pool["session"] = aiohttp.ClientSession()
        body = {
            "workflow_id": bench.WORKFLOW_ID,
            "app_id": bench.APP_ID,
            "additional_messages": [
                {"role": "user", "type": "question", "content": message, "content_type": "text"}
            ],
            "parameters": {},
        }
        ids = {"conversation_id": "c1", "message_id": "m1"}
        yield f"data: {json.dumps({'type': 'start', **ids})}\n\n"
        async with pool["session"].post(
            f"{fake_url}/v1/workflows/chat",
            data=json.dumps(body).encode(),
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        ) as response:
            parser = SseParser()
            async for chunk in response.content.iter_any():
                for event in parser.feed(chunk):
                    if event.event == "conversation.message.delta":
                        delta = json.loads(event.data)
                        frame = {"type": "message", "content": delta["content"]}
                        yield f"data: {json.dumps(frame, ensure_ascii=False)}\n\n"
        done = {"type": "done", "content": "", **ids, "finish_reason": "stop"}
        yield f"data: {json.dumps(done)}\n\n"

    async def chat_stream(request: Request) -> StreamingResponse:
        message = (await request.json())["message"]
        return StreamingResponse(frames(message), media_type="text/event-stream")

    app = Starlette(routes=[Route("/api/chat/stream", chat_stream, methods=["POST"])])
    uvicorn.run(
        app, port=port, http="httptools", loop="uvloop", log_level="warning", access_log=False
    )


@contextlib.contextmanager
def _relay(fake_url: str, token: str) -> Iterator[tuple[str, int]]:
    port = bench._free_port()
    process = subprocess.Popen(
        [sys.executable, __file__, "--serve-relay", str(port), fake_url, token]
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(url, timeout=1)
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline:
                    raise TimeoutError("the relay did not start") from None
                time.sleep(0.1)
        yield url, process.pid
    finally:
        process.terminate()
        process.wait(timeout=10)


async def _cpu_per_turn(url: str, pid: int, token: str, turns: int) -> float:
    """CPU ms (utime + stime) of process ``pid`` per turn over ``turns`` turns of one user."""
    async with httpx.AsyncClient(timeout=60) as client:
        user = bench.GatewayUser(0, client, url, token)
        for _ in range(3):  # warm-up
            await user.turn()
        user0, sys0 = _times(pid)
        for _ in range(turns):
            await user.turn()
        user1, sys1 = _times(pid)
    return 1000 * (user1 - user0 + sys1 - sys0) / turns


def main() -> None:
    if len(sys.argv) == 5 and sys.argv[1] == "--serve-relay":
        _relay_main(int(sys.argv[2]), sys.argv[3], sys.argv[4])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--words", default="1,15", help="comma-separated reply lengths")
    parser.add_argument("--turns", type=int, default=80, help="turns per length and side")
    parser.add_argument("--rounds", type=int, default=2, help="alternations of the two sides")
    parser.add_argument("--redis-db", type=int, default=11)
    parser.add_argument("--pg-url", default="postgresql+asyncpg://postgres@127.0.0.1:5432/postgres")
    args = parser.parse_args()
    redis_url = f"redis://127.0.0.1:6379/{args.redis_db}"
    print(f"{args.database}, one user, {args.turns} turns per length and side, CPU ms per turn\n")
    print("| words | bare relay | sessiongate serve | the gateway's own share |")
    print("| --- | --- | --- | --- |")
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        private_key, public_key = generate_keypair(workdir / "keys")
        with bench._database(args.database, workdir, args.pg_url) as database_url:
            for words in (int(w) for w in args.words.split(",")):
                with (
                    bench._fake_coze(workdir, public_key, words) as (fake_url, _),
                    bench._gateway(
                        workdir, database_url, fake_url, private_key, redis_url
                    ) as gateway,
                ):
                    with httpx.Client(timeout=30) as sync:
                        upstream_token = bench._exchange_token(
                            sync, fake_url, private_key.read_bytes(), "floor-0"
                        )
                        session = str(sync.post(f"{gateway.url}/api/session").json()["token"])
                    relay_ms: list[float] = []
                    gateway_ms: list[float] = []
                    with _relay(fake_url, upstream_token) as (relay_url, relay_pid):
                        for _ in range(args.rounds):
                            relay_ms.append(
                                asyncio.run(
                                    _cpu_per_turn(relay_url, relay_pid, "unused", args.turns)
                                )
                            )
                            gateway_ms.append(
                                asyncio.run(
                                    _cpu_per_turn(gateway.url, gateway.pid, session, args.turns)
                                )
                            )
                    relay, served = min(relay_ms), min(gateway_ms)
                    print(f"| {words} | {relay:.1f} | {served:.1f} | {served - relay:.1f} |")
    print("\nEach figure is the lowest of the rounds (the least disturbed by the machine).")


if __name__ == "__main__":
    main()
