"""Benchmark: one user's turns, the gateway's CPU per turn split into a fixed part and a
part per streamed frame.

Same fake Coze workflow and gateway as ``turns.py`` (SQLite or PostgreSQL, Redis
coordination on), but one user, turns one after another, at several reply lengths
(``--words``, default 1, 15 and 45 words 10 ms apart). The gateway's utime and stime
(``/proc/<pid>/stat``) over ``--turns`` turns give CPU per turn at each length; a
least-squares line through them gives the fixed cost of a turn (request, session,
admission, lock, SQL, upstream request, finish) and the cost of each further frame
(upstream event in, SSE frame out). Which of the two dominates says where to look.

    .venv/bin/python bench/turn_cost.py [--database sqlite|postgres] [--turns 60]
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
import turns as bench  # noqa: E402

from sessiongate.coze import generate_keypair  # noqa: E402


def _times(pid: int) -> tuple[float, float]:
    """(utime, stime) of process ``pid``, seconds."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    rest = stat[stat.rfind(")") + 2 :].split()
    return int(rest[11]) / bench.CLK_TCK, int(rest[12]) / bench.CLK_TCK


async def _measure(
    gateway: bench.Gateway, turns: int, profile: Path | None = None
) -> tuple[float, float, float, float]:
    """(user ms, system ms, wall ms, garbage collection ms) per turn over ``turns`` turns
    of one user; with ``profile``, py-spy records the gateway into that file meanwhile."""
    async with httpx.AsyncClient(timeout=60) as client:
        token = (await client.post(f"{gateway.url}/api/session")).json()["token"]
        user = bench.GatewayUser(0, client, gateway.url, token)
        for _ in range(3):  # warm-up: connection, statement caches, the Coze token
            await user.turn()
        spy = bench._start_profile(gateway.pid, profile) if profile is not None else None
        gc0 = _gc_us(gateway.sql_counts())
        user0, sys0 = _times(gateway.pid)
        start = time.perf_counter()
        for _ in range(turns):
            await user.turn()
        wall = time.perf_counter() - start
        user1, sys1 = _times(gateway.pid)
        gc1 = _gc_us(gateway.sql_counts())
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            spy.wait(timeout=60)
    return (
        1000 * (user1 - user0) / turns,
        1000 * (sys1 - sys0) / turns,
        1000 * wall / turns,
        (gc1 - gc0) / 1000 / turns,
    )


def _gc_us(counts: dict[str, int]) -> int:
    """Microseconds the gateway spent in garbage collection so far, all generations."""
    return sum(counts.get(f"gc{generation}_us", 0) for generation in range(3))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--words", default="1,15,45", help="comma-separated reply lengths")
    parser.add_argument("--turns", type=int, default=60, help="turns per reply length")
    parser.add_argument("--redis-db", type=int, default=11)
    parser.add_argument("--pg-url", default="postgresql+asyncpg://postgres@127.0.0.1:5432/postgres")
    parser.add_argument(
        "--profile", type=Path, help="directory for py-spy raw profiles, one per length"
    )
    args = parser.parse_args()
    if args.profile is not None:
        args.profile.mkdir(parents=True, exist_ok=True)
    lengths = [int(w) for w in args.words.split(",")]
    redis_url = f"redis://127.0.0.1:6379/{args.redis_db}"
    print(f"{args.database}, one user, {args.turns} turns per length\n")
    print("| words | gateway CPU ms per turn (user + system) | of it in gc ms | wall ms |")
    print("| --- | --- | --- | --- |")
    points: list[tuple[int, float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        private_key, public_key = generate_keypair(workdir / "keys")
        with bench._database(args.database, workdir, args.pg_url) as database_url:
            for words in lengths:
                with (
                    bench._fake_coze(workdir, public_key, words) as (fake_url, _),
                    bench._gateway(
                        workdir, database_url, fake_url, private_key, redis_url
                    ) as gateway,
                ):
                    user_ms, sys_ms, wall_ms, gc_ms = asyncio.run(
                        _measure(
                            gateway,
                            args.turns,
                            args.profile / f"{args.database}-{words}words.txt"
                            if args.profile
                            else None,
                        )
                    )
                points.append((words, user_ms + sys_ms))
                cpu = f"{user_ms + sys_ms:.1f} ({user_ms:.1f} + {sys_ms:.1f})"
                print(f"| {words} | {cpu} | {gc_ms:.2f} | {wall_ms:.0f} |")
    if len(points) >= 2:
        n = len(points)
        mean_x = sum(x for x, _ in points) / n
        mean_y = sum(y for _, y in points) / n
        slope = sum((x - mean_x) * (y - mean_y) for x, y in points) / sum(
            (x - mean_x) ** 2 for x, _ in points
        )
        fixed = mean_y - slope * mean_x
        print(f"\nfixed per turn: {fixed:.1f} ms; per frame (one word): {slope:.2f} ms")


if __name__ == "__main__":
    main()
