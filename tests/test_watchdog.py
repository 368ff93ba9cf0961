"""``tasks.Watchdog``: the idle and whole-turn timeouts of a stream read, its pause while
the consumer runs, cancellations from elsewhere passing through, and watchdogs nested.

Sleeps are several times the timeouts they must outlast or undercut; no assertion
depends on how long anything took, only on which error (if any) came out."""

from __future__ import annotations

import asyncio

import pytest

from sessiongate.tasks import Watchdog


class Inner(Exception):
    pass


class Outer(Exception):
    pass


async def test_no_event_within_idle_seconds_raises_the_idle_error() -> None:
    with pytest.raises(Inner, match="idle timeout"):
        with Watchdog(idle=0.05, error=Inner):
            await asyncio.sleep(5)


async def test_events_in_time_keep_it_alive_past_the_idle_time() -> None:
    with Watchdog(idle=0.2, error=Inner) as watchdog:
        for _ in range(15):  # 0.45 s in all: past the idle time without the pokes
            await asyncio.sleep(0.03)
            watchdog.poke()


async def test_the_whole_limit_holds_however_often_it_is_poked() -> None:
    with pytest.raises(Inner, match="turn deadline"):
        with Watchdog(idle=5, whole=0.2, error=Inner) as watchdog:
            for _ in range(500):
                await asyncio.sleep(0.02)
                watchdog.poke()


async def test_a_pause_stops_the_idle_clock_until_the_next_poke() -> None:
    with Watchdog(idle=0.1, error=Inner) as watchdog:
        watchdog.pause()
        await asyncio.sleep(0.4)  # the consumer's time: four idle timeouts
        watchdog.poke()
    with pytest.raises(Inner, match="idle timeout"):
        with Watchdog(idle=0.1, error=Inner) as watchdog:
            watchdog.pause()
            await asyncio.sleep(0.05)
            watchdog.poke()  # the stream's own wait again: the clock runs
            await asyncio.sleep(5)


async def test_a_cancellation_from_elsewhere_passes_through_unchanged() -> None:
    async def read() -> None:
        with Watchdog(idle=5, error=Inner):
            await asyncio.sleep(5)

    task = asyncio.create_task(read())
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_a_swallowed_cancellation_still_ends_in_the_error_at_the_next_event() -> None:
    """A library that catches CancelledError must not hide the timeout."""
    with pytest.raises(Inner, match="idle timeout"):
        with Watchdog(idle=0.05, error=Inner) as watchdog:
            try:
                await asyncio.sleep(5)
            except asyncio.CancelledError:
                pass
            watchdog.poke()


async def test_an_inner_watchdog_firing_leaves_the_outer_one_running() -> None:
    with pytest.raises(Outer, match="idle timeout"):
        with Watchdog(idle=0.3, error=Outer) as outer:
            with pytest.raises(Inner):
                with Watchdog(idle=0.05, error=Inner):
                    await asyncio.sleep(5)
            outer.poke()
            await asyncio.sleep(5)  # now the outer one's idle time runs out


async def test_an_outer_watchdog_firing_passes_through_the_inner_one() -> None:
    with pytest.raises(Outer, match="turn deadline"):
        with Watchdog(idle=5, whole=0.05, error=Outer):
            with Watchdog(idle=5, error=Inner):
                await asyncio.sleep(5)
