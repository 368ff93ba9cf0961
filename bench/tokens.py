"""Benchmark: Coze token exchanges per session under concurrency, sessiongate vs cozepy.

Load: ``--sessions`` S session_names x ``--callers`` M callers each, all asking for the
session's access token at the same moment (one ``asyncio.gather`` of S*M calls), repeated
``--rounds`` R times; rounds after the first should be served from the cache. Every
approach runs against the project's fake Coze (``tests/fakes/coze_server.py``, a real
uvicorn on 127.0.0.1), which verifies each JWT and counts successful exchanges per
session_name; the fake is reset between approaches and its counters are the figures.

Approaches, in one run, same key pair, client id, base URL and ttl:

* ``sessiongate``: one ``CozeTokenManager.from_settings(...)``; each caller awaits
  ``access_token(session_name)``. Single-flight per session_name, so S exchanges.
* ``cozepy per-session``: cozepy 0.20's ``AsyncJWTAuth`` cannot pass a session_name (its
  ``_generate_token`` calls ``get_access_token(self._ttl)`` and caches one token), so this
  is what an operator would write instead: one ``AsyncJWTOAuthApp`` and a plain dict
  session_name -> ``OAuthToken``, each caller running ``AsyncJWTAuth._generate_token``'s
  logic line for line (return the cached token while ``int(time.time()) < expires_in``,
  else ``await get_access_token(ttl, session_name=...)`` and store it), with no lock,
  as cozepy has none. Tokens are bound to their session_name.
* ``cozepy AsyncJWTAuth``: cozepy's own helper unmodified, one instance per session,
  each caller awaiting ``auth.atoken``. Same caching, but its tokens carry no
  session_name, so Coze cannot isolate the sessions; shown for the exchange count only.

Columns: exchanges (successful, as the fake counted), per session, tokens (distinct
tokens handed to callers), bound (every token the fake issued carries the caller's
session_name), wall time (ms, all rounds), failed calls, and exchanges relative to
sessiongate.

Reading the wall time: cozepy's ``_gen_jwt`` hands the PEM text to authlib, which parses
the RSA key again for every JWT (~40 ms here, synchronous on the event loop), so each
extra exchange costs far more than its loopback round trip; sessiongate parses the key
once. The exchange counts do not depend on this.

    .venv/bin/python bench/tokens.py [--sessions 20] [--callers 25] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from cozepy import AsyncJWTAuth, AsyncJWTOAuthApp, OAuthToken

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.fakes.coze_server import FakeCoze, serve_fake_coze  # noqa: E402

from sessiongate.coze.auth import CozeTokenManager  # noqa: E402
from sessiongate.coze.keys import generate_keypair  # noqa: E402
from sessiongate.coze.settings import CozeSettings  # noqa: E402

CLIENT_ID = "1170000000001"
PUBLIC_KEY_ID = "kid-bench-0001"

#: ``fetch(session_name) -> access token``; one per approach.
Fetch = Callable[[str], Awaitable[str]]


@dataclass(frozen=True)
class Load:
    sessions: int
    callers: int
    rounds: int

    @property
    def session_names(self) -> list[str]:
        return [f"bench-user-{i:03d}" for i in range(self.sessions)]


@dataclass(frozen=True)
class Result:
    approach: str
    exchanges: int  # successful, as counted by the fake
    token_requests: int  # every request to the token endpoint
    distinct_tokens: int  # different tokens handed to callers
    bound: bool  # every handed-out token is bound to its caller's session_name
    wall_s: float
    failed: int  # calls that raised


async def drive(fake: FakeCoze, approach: str, load: Load, fetch: Fetch) -> Result:
    """Run ``load`` through ``fetch``; read the fake's counters afterwards."""
    fake.reset()
    names = load.session_names
    handed: set[tuple[str, str]] = set()
    failed = 0
    start = time.perf_counter()
    for _ in range(load.rounds):
        callers = [name for name in names for _ in range(load.callers)]
        results = await asyncio.gather(*(fetch(name) for name in callers), return_exceptions=True)
        for name, result in zip(callers, results, strict=True):
            if isinstance(result, BaseException):
                failed += 1
            else:
                handed.add((name, result))
    wall = time.perf_counter() - start
    bound = all(
        (issued := fake.tokens.get(token)) is not None and issued.session_name == name
        for name, token in handed
    )
    return Result(
        approach=approach,
        exchanges=sum(fake.exchanges.values()),
        token_requests=fake.token_requests,
        distinct_tokens=len({token for _, token in handed}),
        bound=bound,
        wall_s=wall,
        failed=failed,
    )


async def run_sessiongate(fake: FakeCoze, settings: CozeSettings, load: Load) -> Result:
    manager = CozeTokenManager.from_settings(settings, connect_timeout=30, timeout=30)
    try:
        return await drive(fake, "sessiongate", load, manager.access_token)
    finally:
        await manager.aclose()


async def _close_app(app: AsyncJWTOAuthApp) -> None:
    # cozepy creates its httpx client lazily and offers no close: close it here.
    client = app._requester._async_client
    if client is not None:
        await client.aclose()


async def run_cozepy_per_session(
    fake: FakeCoze, settings: CozeSettings, private_pem: str, load: Load
) -> Result:
    app = AsyncJWTOAuthApp(CLIENT_ID, private_pem, PUBLIC_KEY_ID, base_url=settings.api_base_url)
    cache: dict[str, OAuthToken] = {}

    async def fetch(session_name: str) -> str:
        # AsyncJWTAuth._generate_token, keyed by session_name; no lock, as in cozepy.
        token = cache.get(session_name)
        if token is not None and int(time.time()) < token.expires_in:
            return token.access_token
        token = await app.get_access_token(settings.token_ttl, session_name=session_name)
        cache[session_name] = token
        return token.access_token

    try:
        return await drive(fake, "cozepy per-session", load, fetch)
    finally:
        await _close_app(app)


async def run_cozepy_helper(
    fake: FakeCoze, settings: CozeSettings, private_pem: str, load: Load
) -> Result:
    helpers = {
        name: AsyncJWTAuth(
            CLIENT_ID,
            private_pem,
            PUBLIC_KEY_ID,
            ttl=settings.token_ttl,
            base_url=settings.api_base_url,
        )
        for name in load.session_names
    }

    async def fetch(session_name: str) -> str:
        token: str = await helpers[session_name].atoken
        return token

    try:
        return await drive(fake, "cozepy AsyncJWTAuth", load, fetch)
    finally:
        for helper in helpers.values():
            await _close_app(helper._oauth_cli)


def print_table(load: Load, results: list[Result]) -> None:
    baseline = results[0].exchanges
    header = (
        f"{'approach':<20} {'sessions':>8} {'callers':>7} {'rounds':>6} {'exchanges':>9} "
        f"{'per session':>11} {'tokens':>6} {'bound':>5} {'wall ms':>8} {'failed':>6} "
        f"{'x sessiongate':>13}"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        ratio = f"x{r.exchanges / baseline:.1f}" if baseline else "-"
        print(
            f"{r.approach:<20} {load.sessions:>8} {load.callers:>7} {load.rounds:>6} "
            f"{r.exchanges:>9} {r.exchanges / load.sessions:>11.1f} {r.distinct_tokens:>6} "
            f"{'yes' if r.bound else 'no':>5} {r.wall_s * 1000:>8.1f} {r.failed:>6} "
            f"{ratio:>13}"
        )
    for r in results:
        if r.token_requests != r.exchanges:
            print(f"note: {r.approach}: {r.token_requests} token requests, {r.exchanges} ok")


async def run(load: Load, settings: CozeSettings, private_pem: str, fake: FakeCoze) -> None:
    results = [
        await run_sessiongate(fake, settings, load),
        await run_cozepy_per_session(fake, settings, private_pem, load),
        await run_cozepy_helper(fake, settings, private_pem, load),
    ]
    print(
        f"{load.sessions} session_names x {load.callers} concurrent callers, "
        f"{load.rounds} rounds; token ttl {settings.token_ttl}s; fake Coze on {fake.url}"
    )
    print_table(load, results)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--callers", type=int, default=25, help="concurrent per session")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    load = Load(sessions=args.sessions, callers=args.callers, rounds=args.rounds)

    with tempfile.TemporaryDirectory() as tmp:
        private_path, public_path = generate_keypair(Path(tmp) / "keys")
        fake = FakeCoze(
            clock=time.time,
            public_keys={PUBLIC_KEY_ID: public_path.read_bytes()},
            client_id=CLIENT_ID,
        )
        with serve_fake_coze(fake):
            settings = CozeSettings(
                _env_file=None,  # type: ignore[call-arg]
                api_base=fake.url,
                oauth_client_id=CLIENT_ID,
                oauth_public_key_id=PUBLIC_KEY_ID,
                oauth_private_key_file=private_path,
            )
            asyncio.run(run(load, settings, private_path.read_text(), fake))


if __name__ == "__main__":
    main()
