"""Benchmark: the async HTTP client and pool sizes for the upstream (Coze) streams.

``C`` concurrent users stream ``POST /v1/workflows/chat`` replies (15 words 10 ms
apart, or ``--delay 0`` for a client-bound run) from the fake Coze of ``bench/turns.py``,
each user ``--turns`` turns back to back, through one shared client per variant:
httpx with several pool limits (the gateway's ``coze.sdk.new_http_client`` is
``max_connections=200, max_keepalive_connections=50``), httpx2 (the fork ``openai>=3``
uses) and aiohttp (what the workflow stream uses since this benchmark). Prints per
variant: turns/s, p50/p99 of a turn and CPU milliseconds per turn of this process (the
client's cost; the fake runs in a process of its own).

    .venv/bin/python bench/upstream_clients.py [--users 32,128] [--turns 5] [--delay 0.01]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import resource
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import turns  # noqa: E402  (bench/turns.py: the fake Coze process and token exchange)

from sessiongate.coze import generate_keypair  # noqa: E402

Turn = Callable[[dict[str, Any], dict[str, str]], Awaitable[None]]


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _handle(event: str, line: str) -> bool:
    """Decode one SSE data line as the gateway does; True at the chat's completion."""
    if event != "done":
        json.loads(line[5:])
    return event == "conversation.chat.completed"


@contextlib.asynccontextmanager
async def _httpx_variant(
    module: Any, url: str, connections: int | None, keepalive: int | None
) -> AsyncIterator[Turn]:
    limits = module.Limits(max_connections=connections, max_keepalive_connections=keepalive)
    async with module.AsyncClient(limits=limits, timeout=60) as client:

        async def turn(body: dict[str, Any], headers: dict[str, str]) -> None:
            async with client.stream("POST", url, json=body, headers=headers) as r:
                event, completed = "", False
                async for line in r.aiter_lines():
                    if line.startswith("event:"):
                        event = line[6:].strip()
                    elif line.startswith("data:"):
                        completed = _handle(event, line) or completed
                assert completed and r.status_code == 200

        yield turn


@contextlib.asynccontextmanager
async def _aiohttp_variant(url: str, connections: int) -> AsyncIterator[Turn]:
    import aiohttp

    connector = aiohttp.TCPConnector(limit=connections)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def turn(body: dict[str, Any], headers: dict[str, str]) -> None:
            async with session.post(url, json=body, headers=headers) as r:
                event, completed = "", False
                async for raw in r.content:
                    line = raw.decode().rstrip("\r\n")
                    if line.startswith("event:"):
                        event = line[6:].strip()
                    elif line.startswith("data:"):
                        completed = _handle(event, line) or completed
                assert completed and r.status == 200

        yield turn


async def _measure(
    variant: Callable[[], contextlib.AbstractAsyncContextManager[Turn]],
    users: int,
    turns_each: int,
    token: str,
) -> tuple[float, float, float, float]:
    headers = {"Authorization": f"Bearer {token}", "Accept": "text/event-stream"}
    samples: list[float] = []
    async with variant() as turn:

        async def user(index: int, count: int, record: bool) -> None:
            body = {
                "workflow_id": turns.WORKFLOW_ID,
                "app_id": turns.APP_ID,
                "additional_messages": [
                    {"role": "user", "type": "question", "content": "hi", "content_type": "text"}
                ],
                "parameters": {},
                "session_name": f"u{index}",
                "ext": {"user_id": f"u{index}"},
            }
            for _ in range(count):
                start = time.perf_counter()
                await turn(body, headers)
                if record:
                    samples.append(time.perf_counter() - start)

        await asyncio.gather(*(user(i, 1, False) for i in range(users)))  # warm-up
        cpu, start = _cpu(), time.perf_counter()
        await asyncio.gather(*(user(i, turns_each, True) for i in range(users)))
        wall, cpu = time.perf_counter() - start, _cpu() - cpu
    samples.sort()
    p50 = samples[len(samples) // 2] * 1000
    p99 = samples[min(len(samples) - 1, int(len(samples) * 0.99))] * 1000
    return len(samples) / wall, p50, p99, cpu * 1000 / len(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", default="32,128")
    parser.add_argument("--turns", type=int, default=5)
    parser.add_argument("--delay", type=float, default=turns.WORD_DELAY)
    args = parser.parse_args()
    turns.WORD_DELAY = args.delay
    with contextlib.suppress(ImportError):
        import uvloop

        uvloop.install()
    with tempfile.TemporaryDirectory(prefix="sg-bench-clients-") as tmp:
        private_key, public_key = generate_keypair(Path(tmp) / "keys")
        with turns._fake_coze(Path(tmp), public_key) as (fake_url, _):
            with httpx.Client() as sync:
                token = turns._exchange_token(sync, fake_url, private_key.read_bytes(), "bench")
            url = f"{fake_url}/v1/workflows/chat"
            for users in [int(u) for u in args.users.split(",")]:
                variants: list[tuple[str, Callable[[], Any]]] = [
                    ("httpx 200/50 (before)", lambda: _httpx_variant(httpx, url, 200, 50)),
                    (f"httpx {users}/{users}", lambda u=users: _httpx_variant(httpx, url, u, u)),
                    ("httpx 100/100", lambda: _httpx_variant(httpx, url, 100, 100)),
                    ("httpx 200/200", lambda: _httpx_variant(httpx, url, 200, 200)),
                ]
                with contextlib.suppress(ImportError):
                    import httpx2

                    variants.append(
                        ("httpx2 200/200", lambda: _httpx_variant(httpx2, url, 200, 200))
                    )
                with contextlib.suppress(ImportError):
                    import aiohttp  # noqa: F401

                    variants.append(("aiohttp limit 200", lambda: _aiohttp_variant(url, 200)))
                gap = args.delay * 1000
                print(f"\n{users} users, {args.turns} turns each, words {gap:.0f} ms apart")
                print("| client | turns/s | p50 / p99 ms | client CPU ms/turn |")
                print("| --- | --- | --- | --- |")
                for name, variant in variants:
                    rate, p50, p99, cpu = asyncio.run(_measure(variant, users, args.turns, token))
                    print(
                        f"| {name} | {rate:.0f} | {p50:.0f} / {p99:.0f} | {cpu:.2f} |", flush=True
                    )


if __name__ == "__main__":
    main()
