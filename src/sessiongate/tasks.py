"""Stopping background tasks without trusting cancellation alone."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

log = logging.getLogger(__name__)


async def stop_task(task: asyncio.Task[Any], *, wait: float = 5.0) -> None:
    """Cancel ``task`` and wait for it to end, at most ``wait`` seconds; never raises.

    Bounded because a library may swallow a cancellation that lands mid-call: under 128
    concurrent turns a session lock's renewer cancelled inside a redis-py call went back
    to its loop, and the turn waiting for it never ended (its stream hung without a
    final frame). Loops stopped this way also check a stop flag after every await.
    """
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=wait)
    if not done:
        log.warning("task %s did not stop within %.1f s of its cancellation", task.get_name(), wait)
    elif not task.cancelled() and task.exception() is not None:
        log.error("task %s failed", task.get_name(), exc_info=task.exception())


__all__ = ["stop_task"]
