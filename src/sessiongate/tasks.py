"""Stopping background tasks without trusting cancellation alone."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any

log = logging.getLogger(__name__)


async def stop_task(task: asyncio.Task[Any], *, grace: float = 0.0, wait: float = 5.0) -> None:
    """End ``task``: let it finish by itself for ``grace`` seconds, then cancel it and wait
    at most ``wait`` seconds more. Never raises; a failure of the task is logged.

    A loop that writes to the database is told to stop (a flag or event it checks) and
    given a ``grace``, because a cancellation landing in the middle of a write can leave
    the connection holding SQLite's write lock until it is garbage-collected. The wait
    after cancelling is bounded because a library may swallow a cancellation that lands
    mid-call: under 128 concurrent turns a session lock's renewer cancelled inside a
    redis-py call went back to its loop, and the turn waiting for it never ended.
    """
    if grace > 0:
        await asyncio.wait({task}, timeout=grace)
    if not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=wait)
    if not task.done():
        log.warning("task %s did not stop within %.1f s of its cancellation", task.get_name(), wait)
    elif not task.cancelled() and task.exception() is not None:
        log.error("task %s failed", task.get_name(), exc_info=task.exception())


class Deferred:
    """A background loop started only once ``delay`` seconds have passed.

    For the loops a turn keeps beside it (renewing its session lock, saving its reply
    as it grows): most turns end before their first round is due, and a timer costs
    less than a task that sleeps, is woken and is stopped. ``factory()`` makes the
    loop's coroutine; its first round should act at once. Must be made inside the
    running loop.
    """

    def __init__(
        self, delay: float, factory: Callable[[], Coroutine[Any, Any, None]], *, name: str
    ) -> None:
        self._factory = factory
        self._name = name
        self.task: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = asyncio.get_running_loop().call_later(
            delay, self._start
        )

    def _start(self) -> None:
        self._timer = None
        self.task = asyncio.create_task(self._factory(), name=self._name)

    async def stop(self, *, grace: float = 0.0) -> None:
        """Never start it, or ``stop_task`` it with ``grace`` if it has started."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.task is not None:
            await stop_task(self.task, grace=grace)


__all__ = ["Deferred", "stop_task"]
