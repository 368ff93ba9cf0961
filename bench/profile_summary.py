"""Summarise a py-spy raw profile (``py-spy record --format raw``): where the CPU went.

Prints the share of samples (py-spy samples only threads that are running, so this is
CPU) spent *inside* each area of the code — the innermost frame that belongs to a known
area wins, so a SQLAlchemy call made from the turn counts as SQLAlchemy — then the
inclusive share of the gateway's own functions (and of ``--functions``), then the top
functions by self time.

    .venv/bin/python bench/profile_summary.py PROFILE.txt [--top 25]
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path

# (area, pattern on the frame's file path), innermost match wins; order = priority.
AREAS: list[tuple[str, str]] = [
    ("SQLAlchemy", r"/sqlalchemy/"),
    ("asyncpg", r"/asyncpg/"),
    ("aiosqlite / sqlite3", r"/aiosqlite/|/sqlite3/"),
    ("redis client", r"/redis/"),
    ("httpcore (upstream pool, HTTP/1.1)", r"/httpcore/"),
    ("httpx", r"/httpx/"),
    ("aiohttp (the workflow stream)", r"/aiohttp/|/yarl/|/multidict/"),
    ("h11", r"/h11/"),
    ("pydantic", r"/pydantic/|/pydantic_core/"),
    ("json", r"/json/"),
    ("jwt / cryptography", r"/jwt/|/cryptography/"),
    ("logging", r"/logging/"),
    ("uvicorn (HTTP server)", r"/uvicorn/"),
    ("starlette / fastapi", r"/starlette/|/fastapi/"),
    ("anyio", r"/anyio/"),
    ("sessiongate coze", r"/sessiongate/coze/"),
    ("sessiongate store", r"/sessiongate/store/"),
    ("sessiongate api", r"/sessiongate/api/"),
    ("sessiongate coordination", r"/sessiongate/coordination"),
    ("sessiongate (other)", r"/sessiongate/"),
    ("asyncio / uvloop", r"/asyncio/|uvloop"),
]
_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^()]*):(?P<line>\d+)\)$")


def _parse(line: str) -> tuple[list[tuple[str, str]], int]:
    stack, _, count = line.rstrip("\n").rpartition(" ")
    frames = []
    for raw in stack.split(";"):
        match = _FRAME.match(raw.strip())
        if match:
            frames.append((match["func"], match["file"]))
        else:
            frames.append((raw.strip(), ""))
    return frames, int(count)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("profile", type=Path)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument(
        "--functions",
        default="",
        help="comma-separated extra function names (outside sessiongate) to report inclusively",
    )
    args = parser.parse_args()
    areas: Counter[str] = Counter()
    selfs: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    wanted = set(args.functions.split(","))
    total = 0
    for line in args.profile.read_text().splitlines():
        if not line.strip():
            continue
        frames, count = _parse(line)
        total += count
        area = "other (interpreter, C code)"
        for _func, file in reversed(frames):
            hit = next((name for name, pattern in AREAS if re.search(pattern, file)), None)
            if hit is not None:
                area = hit
                break
        areas[area] += count
        if frames:
            func, file = frames[-1]
            selfs[f"{func} ({Path(file).name})" if file else func] += count
        # A function's inclusive share: samples with it anywhere on the stack (once each).
        mine = {
            f
            for f, file in frames
            if "/sessiongate/" in file or f.rsplit(".", 1)[-1] in wanted or f in wanted
        }
        for func in mine:
            inclusive[func] += count
    if not total:
        print("no samples")
        return
    print(f"{total} samples\n\nby area (innermost known frame):")
    for name, n in areas.most_common():
        print(f"  {100 * n / total:5.1f}%  {name}")
    print(f"\ninclusive, the gateway's functions (top {args.top}):")
    for name, n in inclusive.most_common(args.top):
        print(f"  {100 * n / total:5.1f}%  {name}")
    print(f"\ntop {args.top} by self time:")
    for name, n in selfs.most_common(args.top):
        print(f"  {100 * n / total:5.1f}%  {name}")


if __name__ == "__main__":
    main()
