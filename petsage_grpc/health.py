"""The standard health protocol, `grpc.health.v1.Health`: its state and its servicer.

`HealthState` holds every service's serving status and the open Watch streams, behind one lock,
in the manner of grpc-go's `health/server.go`. Setting a status never waits: each watcher has a
one-slot mailbox that keeps only the latest status, and its own Watch handler writes that to its
stream. So a client that stops reading holds up nobody but itself.

`HealthServicer` answers Check, Watch and List from that state and does no other I/O.

An application with its own `grpc.aio` server embeds both:

    state = HealthState()
    health_pb2_grpc.add_HealthServicer_to_server(HealthServicer(state), server)
    state.set("my.package.MyService", SERVING)
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from typing import NoReturn, Protocol, TypeAlias, TypeVar

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from petsage_grpc.history import History

ServingStatus: TypeAlias = int
"""A value of grpc.health.v1.HealthCheckResponse.ServingStatus."""

UNKNOWN: ServingStatus = health_pb2.HealthCheckResponse.UNKNOWN
SERVING: ServingStatus = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING: ServingStatus = health_pb2.HealthCheckResponse.NOT_SERVING
SERVICE_UNKNOWN: ServingStatus = health_pb2.HealthCheckResponse.SERVICE_UNKNOWN


OVERALL = ""
"""The name that stands for the whole server."""

LIST_LIMIT = 100
"""List fails with RESOURCE_EXHAUSTED past this many services (gRFC A90)."""


def status_name(status: ServingStatus) -> str:
    """`SERVING`, `NOT_SERVING` ...: a status as the protocol names it."""
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(status))


class WatchRefused(Exception):
    """A Watch stream cannot open: a limit is reached. The message says which."""


class Mailbox(Protocol):
    """What the state keeps for each Watch stream: offered every change of its service, and the
    end, under the state's lock; neither may wait."""

    service: str

    def _offer(self, status: ServingStatus, loop: asyncio.AbstractEventLoop | None) -> None: ...

    def _end(self, loop: asyncio.AbstractEventLoop | None) -> None: ...


M = TypeVar("M", bound=Mailbox)


class Watcher:
    """One Watch stream's mailbox: the latest status of one service, and whether to end.

    The state writes to it under its lock, from any thread; the Watch handler reads it on its
    event loop with `next()`. A future exists only while the handler waits: thousands of idle
    watchers hold nothing more than these few slots.
    """

    __slots__ = ("_ended", "_latest", "_loop", "_sent", "_waiter", "service")

    def __init__(
        self, service: str, status: ServingStatus, loop: asyncio.AbstractEventLoop
    ) -> None:
        self.service = service
        self._loop = loop
        self._waiter: asyncio.Future[None] | None = None
        self._latest = status
        self._sent: ServingStatus | None = None
        self._ended = False

    async def next(self) -> ServingStatus | None:
        """The status to send next, once it differs from the last one sent; None to end."""
        while True:
            if self._latest != self._sent:
                self._sent = self._latest
                return self._sent
            if self._ended:
                return None
            self._waiter = self._loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None

    def _offer(self, status: ServingStatus, loop: asyncio.AbstractEventLoop | None) -> None:
        self._latest = status
        self._wake(loop)

    def _end(self, loop: asyncio.AbstractEventLoop | None) -> None:
        self._ended = True
        self._wake(loop)

    def _wake(self, loop: asyncio.AbstractEventLoop | None) -> None:
        if loop is self._loop:
            self._resolve()
        else:
            with contextlib.suppress(RuntimeError):  # the loop has closed: nobody to wake
                self._loop.call_soon_threadsafe(self._resolve)

    def _resolve(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


class HealthState:
    """The serving status of every service and the watchers of each, behind one lock.

    Every method may be called from any thread. None of them waits on I/O.
    """

    def __init__(
        self, *, max_unknown_services: int | None = None, history: History | None = None
    ) -> None:
        """`history`, when given, records every change of a registered service's status."""
        self.max_unknown_services = max_unknown_services
        self.history = history
        self._lock = threading.Lock()
        self._statuses: dict[str, ServingStatus] = {}
        self._watchers: dict[str, set[Mailbox]] = {}
        self._watcher_count = 0
        self._shutdown = False
        self._ended = False

    def get(self, service: str) -> ServingStatus | None:
        """The status of `service`, or None when it is not registered."""
        return self._statuses.get(service)

    def statuses(self) -> dict[str, ServingStatus]:
        """A snapshot of every registered service and its status."""
        with self._lock:
            return dict(self._statuses)

    @property
    def is_shutdown(self) -> bool:
        """True between `shutdown()` and `resume()`."""
        return self._shutdown

    @property
    def watcher_count(self) -> int:
        """How many Watch streams are open."""
        return self._watcher_count

    def set(self, service: str, status: ServingStatus, reason: str = "") -> None:
        """Register `service` or change its status; every watcher of it sees the change.
        `reason` says why, for the history.

        While the state is shut down the call is ignored, as in grpc-go: a service must not
        report SERVING while the server is going away.
        """
        if status not in _RESPONSES:
            raise ValueError(f"not a grpc.health.v1 serving status: {status!r}")
        with self._lock:
            if not self._shutdown:
                self._set_locked(service, status, reason)

    def shutdown(self) -> None:
        """Set every service NOT_SERVING and ignore `set()` until `resume()`."""
        with self._lock:
            self._shutdown = True
            for service in self._statuses:
                self._set_locked(service, NOT_SERVING, "shutting down")

    def resume(self) -> None:
        """Set every service SERVING and accept `set()` and new Watch streams again."""
        with self._lock:
            self._shutdown = False
            self._ended = False
            for service in self._statuses:
                self._set_locked(service, SERVING, "resumed")

    def end_watches(self) -> None:
        """End every Watch stream, now and from now on, once it has sent its latest status.

        The server calls this as it stops, so that open Watch streams finish with OK instead of
        holding the shutdown for the whole grace period; their clients reconnect elsewhere.
        """
        loop = _running_loop()
        with self._lock:
            self._ended = True
            for watchers in self._watchers.values():
                for watcher in watchers:
                    watcher._end(loop)

    def watch(self, service: str) -> Watcher:
        """Open a watcher of `service`: its first `next()` is the current status.

        A service that is not registered reads SERVICE_UNKNOWN until it is. Call from the event
        loop that will read the watcher; close it with `unwatch()`. Raises WatchRefused when
        `service` is unknown and `max_unknown_services` unknown names are watched already.
        """
        loop = asyncio.get_running_loop()
        return self.attach(service, lambda status: Watcher(service, status, loop), loop)

    def attach(
        self,
        service: str,
        make: Callable[[ServingStatus], M],
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> M:
        """Register the mailbox `make(current status)` as a watcher of `service`: from now on it
        is offered every change, under the lock (so its `_offer` and `_end` must never wait).
        `watch()` is this for asyncio; a thread-based servicer brings its own mailbox. Close it
        with `unwatch()`. Raises WatchRefused as `watch()` does."""
        with self._lock:
            self._admit_locked(service)
            watcher = make(self._statuses.get(service, SERVICE_UNKNOWN))
            self._watchers.setdefault(service, set()).add(watcher)
            self._watcher_count += 1
            if self._ended:
                watcher._end(loop)
        return watcher

    def unwatch(self, watcher: Mailbox) -> None:
        """Close a watcher opened by `watch()` or `attach()`."""
        with self._lock:
            watchers = self._watchers.get(watcher.service)
            if watchers is not None and watcher in watchers:
                watchers.remove(watcher)
                self._watcher_count -= 1
                if not watchers:
                    del self._watchers[watcher.service]

    def _admit_locked(self, service: str) -> None:
        if (
            self.max_unknown_services is not None
            and service not in self._statuses
            and service not in self._watchers
            and sum(name not in self._statuses for name in self._watchers)
            >= self.max_unknown_services
        ):
            raise WatchRefused(
                f"Watch streams wait for {self.max_unknown_services} unknown services already,"
                " the most allowed"
            )

    def _set_locked(self, service: str, status: ServingStatus, reason: str) -> None:
        old = self._statuses.get(service)
        if self.history is not None and old is not None and old != status:
            self.history.add("service", service, status_name(old), status_name(status), reason)
        self._statuses[service] = status
        watchers = self._watchers.get(service)
        if watchers:
            loop = _running_loop()
            for watcher in watchers:
                watcher._offer(status, loop)


async def abort(context: grpc.aio.ServicerContext, code: grpc.StatusCode, details: str) -> NoReturn:
    """End the RPC with `code` and `details` (grpc's `abort`, typed as never returning)."""
    await context.abort(code, details)
    raise AssertionError("grpc.aio.ServicerContext.abort returned")


_RESPONSES = {
    status: health_pb2.HealthCheckResponse(status=status)
    for status in (UNKNOWN, SERVING, NOT_SERVING, SERVICE_UNKNOWN)
}


def name_refusal(service: str, max_bytes: int) -> str:
    """Why Check and Watch refuse `service` (INVALID_ARGUMENT, as grpc C++ does); empty if not."""
    if len(service) > max_bytes // 4 and len(service.encode()) > max_bytes:
        return f"service name longer than {max_bytes} bytes"
    return ""


def list_answer(state: HealthState) -> tuple[health_pb2.HealthListResponse | None, str]:
    """List's answer, or (None, why) past LIST_LIMIT services (RESOURCE_EXHAUSTED, gRFC A90)."""
    statuses = state.statuses()
    if len(statuses) > LIST_LIMIT:
        return (
            None,
            f"{len(statuses)} services are registered, more than List returns ({LIST_LIMIT})",
        )
    answer = health_pb2.HealthListResponse(
        statuses={service: _RESPONSES[status] for service, status in statuses.items()}
    )
    return answer, ""


class HealthServicer(health_pb2_grpc.HealthServicer):
    """Check, Watch and List, read from a HealthState, with the semantics of the spec."""

    def __init__(
        self,
        state: HealthState,
        *,
        max_service_name_bytes: int = 200,
        max_watch_streams: int | None = None,
    ) -> None:
        """`max_watch_streams` caps the Watch streams open through this servicer (each listener
        has its own servicer, so an unauthenticated port cannot use up another's streams)."""
        self._state = state
        self._max_name = max_service_name_bytes
        self._max_streams = max_watch_streams
        self._streams = 0

    async def _check_name(self, service: str, context: grpc.aio.ServicerContext) -> None:
        if refusal := name_refusal(service, self._max_name):
            await abort(context, grpc.StatusCode.INVALID_ARGUMENT, refusal)

    async def Check(
        self, request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext
    ) -> health_pb2.HealthCheckResponse:
        status = self._state.get(request.service)
        if status is None:
            await self._check_name(request.service, context)
        if status is None:
            await abort(context, grpc.StatusCode.NOT_FOUND, f"unknown service {request.service!r}")
        return _RESPONSES[status]

    async def Watch(
        self, request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext
    ) -> None:
        # Written with context.write rather than as an async generator: each status then costs
        # one write, with no generator hop in between (nor in an interceptor's wrapper).
        await self._check_name(request.service, context)
        if self._max_streams is not None and self._streams >= self._max_streams:
            await abort(
                context,
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"{self._streams} Watch streams are open, the most allowed",
            )
        try:
            watcher = self._state.watch(request.service)
        except WatchRefused as exc:
            await abort(context, grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc))
        self._streams += 1
        try:
            while (status := await watcher.next()) is not None:
                await context.write(_RESPONSES[status])
        finally:
            self._streams -= 1
            self._state.unwatch(watcher)

    async def List(
        self, request: health_pb2.HealthListRequest, context: grpc.aio.ServicerContext
    ) -> health_pb2.HealthListResponse:
        answer, refusal = list_answer(self._state)
        if answer is None:
            await abort(context, grpc.StatusCode.RESOURCE_EXHAUSTED, refusal)
        return answer
