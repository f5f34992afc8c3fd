"""InFlight: the RPCs being handled now, by method, as uvicorn's `ServerState` is to its server.

The server interceptor adds each RPC as it starts and removes it as it ends; the stop sequence
waits on it ("only Watch streams left") and the metrics collector reads it at scrape time. It is
safe from any thread, and waiting on it is woken by the change, not by polling.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading

Method = tuple[str, str, str]
"""(gRPC service, method, type: unary, server_stream, client_stream or bidi_stream)."""


class InFlight:
    """How many RPCs of each method are being handled."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[Method, int] = {}
        self._others = 0  # in flight, not counting the method `quiet()` ignores
        self._ignored: Method | None = None
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []

    def begin(self, method: Method) -> None:
        with self._lock:
            self._counts[method] = self._counts.get(method, 0) + 1
            if method != self._ignored:
                self._others += 1
                self._wake_locked()

    def end(self, method: Method) -> None:
        with self._lock:
            self._counts[method] -= 1
            if method != self._ignored:
                self._others -= 1
                self._wake_locked()

    def counts(self) -> dict[Method, int]:
        """A snapshot: every method seen, and how many of its RPCs are in flight."""
        with self._lock:
            return dict(self._counts)

    async def quiet(self, ignore: Method, seconds: float) -> None:
        """Return once no RPC but those of `ignore` has been in flight for `seconds`."""
        with self._lock:
            self._ignored = ignore
            self._others = sum(n for method, n in self._counts.items() if method != ignore)
        while True:
            while self._others:
                await self._change(unless_quiet=True)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._change(), seconds)
                continue  # an RPC started (or ended) meanwhile: look again
            if not self._others:
                return

    async def _change(self, *, unless_quiet: bool = False) -> None:
        """Wait for the next RPC to begin or end (other than the ignored method's); with
        `unless_quiet`, return at once if none is in flight (looked at under the lock, so that
        the last one's end cannot slip in before the wait begins)."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        with self._lock:
            if unless_quiet and not self._others:
                return
            self._waiters.append((loop, future))
        try:
            await future
        finally:
            with self._lock, contextlib.suppress(ValueError):
                self._waiters.remove((loop, future))

    def _wake_locked(self) -> None:
        for loop, future in self._waiters:
            with contextlib.suppress(RuntimeError):  # that loop has closed
                loop.call_soon_threadsafe(_resolve, future)
        self._waiters.clear()


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
