"""Turn rate limits: in-process, and shared by replicas through Redis."""

from __future__ import annotations

import os
import secrets
import socket

import pytest

from sessiongate.errors import ConfigurationError, RateLimited
from sessiongate.ratelimit import TurnLimiter
from sessiongate.store import SessionRow


def session(tenant: str | None = None) -> SessionRow:
    return SessionRow(id=secrets.token_hex(16), tenant_id=tenant)


async def test_session_and_tenant_limits_are_separate_budgets() -> None:
    limiter = TurnLimiter(session_limit="2/minute", tenant_limit="3/minute")
    a, b = session("t1"), session("t1")
    await limiter.hit(a)
    await limiter.hit(a)
    with pytest.raises(RateLimited) as exc:
        await limiter.hit(a)  # a's own budget
    assert exc.value.status == 429 and 1 <= (exc.value.retry_after or 0) <= 60
    await limiter.hit(b)  # the tenant's third turn
    with pytest.raises(RateLimited):
        await limiter.hit(b)  # the tenant's budget, although b has one left
    await limiter.hit(session("t2"))  # another tenant is unaffected


def test_malformed_limit_names_the_setting() -> None:
    with pytest.raises(ConfigurationError) as exc:
        TurnLimiter(session_limit="lots", tenant_limit=None)
    assert "SESSIONGATE_RATE_LIMIT" in exc.value.message


def _redis_answers() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 6379), timeout=1):
            return True
    except OSError:
        return False


async def test_two_replicas_share_one_budget_through_redis() -> None:
    if not _redis_answers():
        if os.environ.get("CI"):
            pytest.fail("Redis does not answer on 127.0.0.1:6379")
        pytest.skip("Redis does not answer on 127.0.0.1:6379")
    url = "redis://127.0.0.1:6379/0"
    replica_1 = TurnLimiter(session_limit="3/minute", tenant_limit=None, redis_url=url)
    replica_2 = TurnLimiter(session_limit="3/minute", tenant_limit=None, redis_url=url)
    s = session()
    await replica_1.hit(s)
    await replica_2.hit(s)
    await replica_1.hit(s)
    with pytest.raises(RateLimited):
        await replica_2.hit(s)
