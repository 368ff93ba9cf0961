"""Benchmark: the embedded model through the gateway vs llama-cpp-python directly.

Prints time to first token (TTFT, ms) and tokens/s for the same prompt, run both ways
in the same process on the same loaded model, alternating, and the ratio of the two.
Through the gateway means: HTTP to a real uvicorn on loopback, session lookup, the
user message stored, context built from the store, SSE frames parsed by the client.

    .venv/bin/python bench/local_model.py [--runs 5] [--max-tokens 64]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.fakes.servers import ServerThread  # noqa: E402

from sessiongate.app import create_app  # noqa: E402
from sessiongate.config import Settings  # noqa: E402
from sessiongate.providers.base import ChatMessage  # noqa: E402
from sessiongate.providers.local import STOP_SEQUENCES, LocalProvider, format_prompt  # noqa: E402

QUESTION = "Tell me a short story about a lighthouse keeper and a storm."


def direct_run(provider: LocalProvider, prompt: str, max_tokens: int) -> tuple[float, float, int]:
    llama = provider._llama  # same loaded model the gateway uses
    start = time.perf_counter()
    first = None
    tokens = 0
    for chunk in llama.create_completion(
        prompt, max_tokens=max_tokens, temperature=0.0, stop=STOP_SEQUENCES, stream=True
    ):
        if first is None:
            first = time.perf_counter()
        if chunk["choices"][0]["text"]:
            tokens += 1
    end = time.perf_counter()
    assert first is not None
    return first - start, end - first, tokens


async def gateway_run(url: str) -> tuple[float, float, int]:
    async with httpx.AsyncClient(base_url=url, timeout=120) as client:
        await client.post("/api/session")  # a fresh session (cookie) for every run
        start = time.perf_counter()
        first = None
        tokens = 0
        async with client.stream("POST", "/api/chat/stream", json={"message": QUESTION}) as r:
            async for line in r.aiter_lines():
                if not line.startswith("data: "):
                    continue
                frame = json.loads(line[6:])
                if frame["type"] == "message":
                    if first is None:
                        first = time.perf_counter()
                    tokens += 1
        end = time.perf_counter()
    assert first is not None
    return first - start, end - first, tokens


def summarise(name: str, runs: list[tuple[float, float, int]]) -> tuple[float, float]:
    ttft = statistics.median(r[0] for r in runs) * 1000
    rate = statistics.median((r[2] - 1) / r[1] for r in runs if r[1] > 0)
    print(f"{name:<10} TTFT {ttft:8.1f} ms   {rate:7.1f} tokens/s   (median of {len(runs)})")
    return ttft, rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--max-tokens", type=int, default=64)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(
            _env_file=None,  # type: ignore[call-arg]
            provider="local",
            database_url=f"sqlite+aiosqlite:///{tmp}/bench.db",
            secret_key="bench-secret-key-0123456789abcdefghijklmnop",
            local_max_tokens=args.max_tokens,
        )
        provider = asyncio.run(
            LocalProvider.load(
                None,
                context_tokens=settings.local_context_tokens,
                max_tokens=args.max_tokens,
                temperature=0.0,
                max_queue=8,
            )
        )
        prompt = format_prompt(
            [ChatMessage("system", settings.system_prompt), ChatMessage("user", QUESTION)]
        )
        direct: list[tuple[float, float, int]] = []
        gateway: list[tuple[float, float, int]] = []
        with ServerThread(create_app(settings, provider=provider)) as server:
            direct_run(provider, prompt, args.max_tokens)  # warm-up
            for _ in range(args.runs):
                direct.append(direct_run(provider, prompt, args.max_tokens))
                gateway.append(asyncio.run(gateway_run(server.url)))
        asyncio.run(provider.aclose())

    print(f"prompt: {len(prompt)} chars; reply up to {args.max_tokens} tokens; greedy")
    d_ttft, d_rate = summarise("direct", direct)
    g_ttft, g_rate = summarise("gateway", gateway)
    ratios = f"TTFT x{g_ttft / d_ttft:.2f}   tokens/s x{g_rate / d_rate:.2f}"
    print(f"ratio      {ratios}   (gateway / direct)")


if __name__ == "__main__":
    main()
