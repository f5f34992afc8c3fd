"""Python checks for the tests, named as `tests.apps.checks:NAME` in check specs."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time


async def hang() -> None:
    """Never returns: a dependency that hangs."""
    await asyncio.Event().wait()


async def ok() -> None:
    """Always passes."""


async def slow() -> None:
    """Passes after half a second."""
    await asyncio.sleep(0.5)


async def refuse() -> bool:
    """Always fails, by returning False."""
    return False


def not_async() -> None:
    """Not a coroutine function: refused at start-up."""


async def stubborn() -> None:
    """Ignores the first cancellation (a check that does not honour its timeout)."""
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.Event().wait()
    await asyncio.Event().wait()


async def blocking_thread() -> None:
    """Holds a thread of the loop's default executor for an hour (a DNS lookup that hangs)."""
    await asyncio.get_running_loop().run_in_executor(None, time.sleep, 3600)


RUNS: list[float] = []


async def counted() -> None:
    """Passes, and counts its runs in RUNS."""
    RUNS.append(time.monotonic())


BLOCK_THE_LOOP = threading.Event()
LOOP_BLOCKED = threading.Event()


async def blocks_the_loop_when_asked() -> None:
    """Passes; once BLOCK_THE_LOOP is set, holds the event loop for 2 s (a check that calls
    blocking code, as it must not), setting LOOP_BLOCKED meanwhile."""
    if BLOCK_THE_LOOP.is_set():
        BLOCK_THE_LOOP.clear()
        LOOP_BLOCKED.set()
        time.sleep(2)  # the blocking call under test, not a wait of the test
        LOOP_BLOCKED.clear()
