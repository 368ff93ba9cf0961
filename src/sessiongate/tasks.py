"""Stopping background tasks without trusting cancellation alone; timers that cost
nothing per event."""

from __future__ import annotations

import asyncio
import logging
import math
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


class Watchdog:
    """Two timeouts on a stream read in the current task: ``idle`` seconds without an
    event (``poke()``), and ``whole`` seconds in all (None: no such limit). On either,
    the task is cancelled and the ``with`` block raises ``error(which)``, ``which``
    being ``"idle timeout"`` or ``"turn deadline"``.

    One timer, re-armed only when it fires early, instead of an ``asyncio.timeout``
    around every event (or a client library's read timeout re-armed on every chunk):
    ``poke()`` per event only records the time. A cancellation from elsewhere (a stop)
    passes through unchanged, told apart as ``asyncio.timeout`` does, by the task's
    cancellation count, so watchdogs may nest.

    ``pause()`` stops the idle clock until the next ``poke()``: a stream that yields
    from inside the ``with`` block pauses while its consumer runs, so the timer never
    cancels the task in the consumer's code, outside this block.
    """

    def __init__(
        self, *, idle: float, whole: float | None = None, error: Callable[[str], BaseException]
    ) -> None:
        self._loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        self._task = task
        self._idle = idle
        self._deadline = self._loop.time() + whole if whole is not None else math.inf
        self._last = self._loop.time()
        self._error = error
        self._fired: str | None = None
        self._paused = False
        self._handle: asyncio.TimerHandle | None = None

    def __enter__(self) -> Watchdog:
        self._cancelling = self._task.cancelling()
        self._handle = self._loop.call_at(self._due(), self._check)
        return self

    def poke(self) -> None:
        """An event arrived. Raises the timeout's error if the timer already fired and its
        cancellation was swallowed on the way (a library may do that)."""
        if self._fired is not None:
            raise self._error(self._fired)
        self._last = self._loop.time()
        self._paused = False

    def pause(self) -> None:
        """The consumer runs: no idle timeout until the next ``poke()``."""
        self._paused = True

    def _due(self) -> float:
        return min(self._last + self._idle, self._deadline)

    def _check(self) -> None:
        if self._paused:
            self._last = self._loop.time()
        due = self._due()
        if self._loop.time() < due:
            self._handle = self._loop.call_at(due, self._check)
            return
        self._handle = None
        self._fired = "turn deadline" if due >= self._deadline else "idle timeout"
        self._task.cancel()

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, _: Any) -> None:
        if self._handle is not None:
            self._handle.cancel()
        if self._fired is None:
            return
        # Our cancellation is taken back whatever the block ended with (as asyncio.timeout).
        if self._task.uncancel() <= self._cancelling and kind is asyncio.CancelledError:
            raise self._error(self._fired) from exc


__all__ = ["Deferred", "Watchdog", "stop_task"]
