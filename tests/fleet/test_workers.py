"""One ``sessiongate serve --workers 2`` on one SQLite file, no secret key set: the
scenarios of the replica fleet that apply to worker processes of one machine. Without
Redis the database coordinates turns; the Coze token cache and rate limits are shared
through Redis only, so those two scenarios run on workers with Redis."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx

from ..fakes.coze_server import FakeCoze
from . import scenarios
from .conftest import Fleet, GatewayClient


async def test_workers_share_one_generated_secret_key(
    workers_fleet: Fleet, http: httpx.AsyncClient
) -> None:
    # Tokens issued by whichever worker opened the session are accepted by every worker:
    # many sessions, each used many times at once, never answer 401.
    clients = await asyncio.gather(
        *(GatewayClient(http, workers_fleet.url).open_session() for _ in range(8))
    )
    answers = await asyncio.gather(
        *(
            http.get(f"{workers_fleet.url}/api/session/info", headers=client.headers)
            for client in clients
            for _ in range(6)
        )
    )
    assert {r.status_code for r in answers} == {200}
    database = Path(workers_fleet.replicas[0].env["SESSIONGATE_DATABASE_URL"].split("///")[1])
    key_file = database.parent / ".sessiongate-secret"
    assert key_file.stat().st_mode & 0o777 == 0o600
    assert len(key_file.read_text().strip()) >= 32


async def test_concurrent_turns_of_one_session_on_two_workers_are_all_stored_in_order(
    workers_fleet: Fleet, http: httpx.AsyncClient
) -> None:
    await scenarios.concurrent_turns_of_one_session(workers_fleet, http)


async def test_one_coze_token_exchange_per_session_across_workers_with_redis(
    workers_redis_fleet: Fleet, http: httpx.AsyncClient, fleet_coze: FakeCoze
) -> None:
    await scenarios.one_token_exchange_per_session(workers_redis_fleet, http, fleet_coze)


async def test_session_rate_limit_is_exact_across_workers_with_redis(
    workers_redis_fleet: Fleet, http: httpx.AsyncClient
) -> None:
    await scenarios.session_rate_limit_is_exact(workers_redis_fleet, http)


async def test_only_one_cleanup_runs_at_a_time_across_workers(
    workers_fleet: Fleet, http: httpx.AsyncClient
) -> None:
    await scenarios.one_cleanup_at_a_time(workers_fleet, http)


async def test_audit_of_two_workers_finds_no_leak(workers_fleet: Fleet) -> None:
    await scenarios.audit_passes(workers_fleet)


async def test_reply_in_progress_is_reattached_through_the_workers_port(
    workers_fleet: Fleet, http: httpx.AsyncClient, fleet_coze: FakeCoze
) -> None:
    url = workers_fleet.url
    await scenarios.reply_reattached_on_another_replica(
        workers_fleet, http, fleet_coze, origin=url, other=url
    )


async def test_metrics_of_two_workers_are_summed_whichever_worker_answers(
    workers_fleet: Fleet, http: httpx.AsyncClient
) -> None:
    # serve --workers N sets up prometheus-client's multiprocess directory before the
    # workers start: every scrape, whichever worker answers it, counts every worker's turns.
    client = await GatewayClient(http, workers_fleet.url).open_session()
    conversation = await client.new_conversation()
    replies = await asyncio.gather(
        *(client.chat(f"counted turn {i}", conversation) for i in range(6))
    )
    assert {r.status_code for r in replies} == {200}

    def turns(text: str) -> float:
        return sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("sessiongate_turns_total{")
        )

    # A new connection each time, so that both workers get to answer.
    scrapes = [
        await http.get(f"{workers_fleet.url}/metrics", headers={"Connection": "close"})
        for _ in range(12)
    ]
    assert {s.status_code for s in scrapes} == {200}
    counted = {turns(s.text) for s in scrapes}
    assert len(counted) == 1 and counted.pop() >= 6, counted
