"""`grpc.health.v1.Health` for grpc's thread-pool server (`grpc.server(ThreadPoolExecutor(...))`),
read from the same `HealthState` as the asyncio servicer, with grpc-go's Watch semantics:

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=10))
    health_pb2_grpc.add_HealthServicer_to_server(SyncHealthServicer(state), server)

It replaces grpcio-health-checking's `HealthServicer` without its two defects: there, `set()`
sends to every watcher while holding the servicer's lock, so one client that stops reading blocks
every `set()` and then every Check; and a stream cancelled during a `set()` deadlocks the server
(its termination callback waits for that lock on grpc's completion-queue thread, whose progress
the blocked send needs).

Here Watch takes grpc's non-blocking path (`experimental_non_blocking`: an open stream holds no
pool thread): the state only updates each watcher's one-slot mailbox under its lock and hands the
watcher to a small pool of sender threads. A sender sends one status at a time per watcher,
re-reads the latest after each send (a burst of changes reaches a slow reader as its last one),
and holds no lock while sending. A send stuck behind a client that reads nothing ties up one
sender: past `SPARE_AFTER` seconds with work waiting, a spare sender starts (up to
`MAX_SENDERS`); past `stuck_after` seconds the stream is cancelled, logged once and counted, and
its client re-Watches. When so many such clients tie up every sender that other watchers wait,
those stuck past `SPARE_AFTER` are cancelled at once: no client holds up another. `close()` ends
the threads once the server has stopped.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from petsage_grpc.health import (
    HealthState,
    ServingStatus,
    WatchRefused,
    list_answer,
    name_refusal,
)

log = logging.getLogger(__name__)

SENDERS = 2
"""Sender threads always there."""
MAX_SENDERS = 16
"""Sender threads at the most, spares included."""
SPARE_AFTER = 0.5
"""Seconds a send may take, while other watchers wait, before a spare sender starts."""
SPARE_IDLE = 5.0
"""Seconds a spare sender waits for work before it ends."""
STUCK_AFTER = 30.0
"""Seconds a send may take before its stream is cancelled (the client re-Watches); sooner, past
`SPARE_AFTER`, when all `MAX_SENDERS` are tied up so and other watchers wait."""

_RESPONSES = {
    status: health_pb2.HealthCheckResponse(status=status)
    for status in health_pb2.HealthCheckResponse.ServingStatus.values()
}


class _Stream:
    """One Watch stream: the state's mailbox for it, and what its senders need."""

    __slots__ = (
        "_latest",
        "_pool",
        "_sent",
        "context",
        "done",
        "ended",
        "queued",
        "send",
        "sending_since",
        "service",
    )

    def __init__(
        self,
        service: str,
        status: ServingStatus,
        send: Callable[[Any], None],
        context: grpc.ServicerContext,
        pool: _Senders,
    ) -> None:
        self.service = service
        self.send = send
        self.context = context
        self._pool = pool
        self._latest = status
        self._sent: ServingStatus | None = None
        self.ended = False  # the stop ends every Watch stream with OK
        self.done = False  # the RPC is over (cancelled, or ended by us)
        self.queued = False  # in the senders' queue, or being sent: at most one send at a time
        self.sending_since: float | None = None

    # Called by the state under its lock: never wait.
    def _offer(self, status: ServingStatus, loop: object) -> None:
        self._latest = status
        self._pool.schedule(self)

    def _end(self, loop: object) -> None:
        self.ended = True
        self._pool.schedule(self)

    def next_message(self) -> tuple[bool, Any]:
        """(True, what to send now: a response, or None to end the stream) or (False, None)."""
        latest = self._latest
        if latest != self._sent:
            self._sent = latest
            return True, _RESPONSES[latest]
        if self.ended:
            return True, None
        return False, None


class _Senders:
    """The threads that write Watch streams: a queue of streams with something to send."""

    def __init__(self, stuck_after: float, on_stuck: Callable[[_Stream], None]) -> None:
        self._lock = threading.Lock()
        self._ready = threading.Condition(self._lock)
        self._queue: collections.deque[_Stream] = collections.deque()
        self._threads = 0
        self._idle = 0
        self._sending: set[_Stream] = set()
        self._stuck_after = stuck_after
        self._on_stuck = on_stuck
        self._watchdog: threading.Thread | None = None
        self._closed = False

    def close(self) -> None:
        """End the threads (once the server has stopped: no send is left to wait for)."""
        with self._lock:
            self._closed = True
            self._ready.notify_all()

    def settled(self, after: float) -> bool:
        """Whether nothing is left to send but to clients that have taken nothing for `after`
        seconds: no stream waits for a sender, and every send in flight is older than that."""
        now = time.monotonic()
        with self._lock:
            return not self._queue and all(
                stream.sending_since is not None and now - stream.sending_since > after
                for stream in self._sending
            )

    def schedule(self, stream: _Stream) -> None:
        with self._lock:
            if stream.queued or stream.done or self._closed:
                return  # its sender re-reads the latest after the send in flight
            stream.queued = True
            self._queue.append(stream)
            if self._idle:
                self._ready.notify()
            elif self._threads < SENDERS:
                self._start_locked()
            if self._watchdog is None:
                self._watchdog = threading.Thread(
                    target=self._watch_sends, name="petsage-watch-watchdog", daemon=True
                )
                self._watchdog.start()

    def _start_locked(self) -> None:
        self._threads += 1
        threading.Thread(target=self._work, name="petsage-watch-sender", daemon=True).start()

    def _work(self) -> None:
        while True:
            with self._lock:
                while not self._queue:
                    if self._closed:
                        self._threads -= 1
                        return
                    self._idle += 1
                    woken = self._ready.wait(SPARE_IDLE)
                    self._idle -= 1
                    if not woken and not self._queue and self._threads > SENDERS:
                        self._threads -= 1  # a spare no longer needed
                        return
                stream = self._queue.popleft()
                self._sending.add(stream)
            self._drain(stream)

    def _drain(self, stream: _Stream) -> None:
        """Send what the stream has, one message at a time, the latest status each time."""
        while True:
            with self._lock:
                found, message = stream.next_message()
                if not found or stream.done:
                    # All in one step: once `queued` is clear, another sender may take it.
                    stream.queued = False
                    self._sending.discard(stream)
                    stream.sending_since = None
                    return
                stream.sending_since = time.monotonic()
            try:
                stream.send(message)  # blocks until written; no lock held
            except Exception:  # the RPC is gone: its termination callback cleans up
                stream.done = True
            if message is None:
                stream.done = True

    def _watch_sends(self) -> None:
        slow_after = min(SPARE_AFTER, self._stuck_after)  # a bound under SPARE_AFTER holds too
        while not self._closed:
            time.sleep(slow_after / 2)
            now = time.monotonic()
            stuck: list[_Stream] = []
            with self._lock:
                waiting = bool(self._queue) and not self._idle
                slow = [
                    s
                    for s in self._sending
                    if s.sending_since is not None and now - s.sending_since > slow_after
                ]
                room = MAX_SENDERS - self._threads
                if waiting and slow:
                    for _ in range(min(len(slow), room)):
                        self._start_locked()  # spare capacity for the watchers behind them
                for stream in slow:
                    since = stream.sending_since
                    # Past the bound, or every sender tied up by clients that take nothing
                    # while other watchers wait: cut, so that no client holds up another.
                    cut = (waiting and room <= 0) or (
                        since is not None and now - since > self._stuck_after
                    )
                    if cut and not stream.done:
                        stream.done = True
                        stuck.append(stream)
            for stream in stuck:  # outside the lock: cancelling frees the blocked send
                try:
                    self._on_stuck(stream)
                except Exception:  # this thread must go on watching the other streams
                    log.exception("could not cancel a stuck Watch stream")


class SyncHealthServicer(health_pb2_grpc.HealthServicer):
    """Check, Watch and List for grpc's thread-pool server, read from a HealthState."""

    def __init__(
        self,
        state: HealthState,
        *,
        max_service_name_bytes: int = 200,
        max_watch_streams: int | None = None,
        stuck_after: float = STUCK_AFTER,
    ) -> None:
        self._state = state
        self._max_name = max_service_name_bytes
        self._max_streams = max_watch_streams
        self._streams = 0
        self._count_lock = threading.Lock()
        self.cut_streams = 0
        """Watch streams cancelled because their client read nothing for `stuck_after`."""
        self._stuck_after = stuck_after
        self._senders = _Senders(stuck_after, self._cut)
        # grpcio calls Watch with a send callback and frees its pool thread when it returns.
        self.Watch.__func__.experimental_non_blocking = True  # type: ignore[attr-defined]

    def Check(
        self, request: health_pb2.HealthCheckRequest, context: grpc.ServicerContext
    ) -> health_pb2.HealthCheckResponse:
        status = self._state.get(request.service)
        if status is None:
            if refusal := name_refusal(request.service, self._max_name):
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, refusal)
            context.abort(grpc.StatusCode.NOT_FOUND, f"unknown service {request.service!r}")
        return _RESPONSES[status]

    def List(
        self, request: health_pb2.HealthListRequest, context: grpc.ServicerContext
    ) -> health_pb2.HealthListResponse:
        answer, refusal = list_answer(self._state)
        if answer is None:
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, refusal)
        return answer

    def Watch(
        self,
        request: health_pb2.HealthCheckRequest,
        context: grpc.ServicerContext,
        send_response_callback: Callable[[Any], None] | None = None,
    ) -> None:
        if send_response_callback is None:  # an interceptor dropped the non-blocking path
            raise RuntimeError("Watch needs grpc's non-blocking stream path")
        service = request.service
        if refusal := name_refusal(service, self._max_name):
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, refusal)
        with self._count_lock:
            if self._max_streams is not None and self._streams >= self._max_streams:
                streams = self._streams
                refused = f"{streams} Watch streams are open, the most allowed"
            else:
                refused = ""
                self._streams += 1
        if refused:
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, refused)
        try:
            stream = self._state.attach(
                service,
                lambda status: _Stream(
                    service, status, send_response_callback, context, self._senders
                ),
            )
        except WatchRefused as exc:
            with self._count_lock:
                self._streams -= 1
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc))
        self._senders.schedule(stream)  # the current status, at once

        def closed() -> None:
            # On grpc's completion-queue thread, after the RPC ends: take no lock a sender
            # holds while sending (none does), never wait.
            stream.done = True
            self._state.unwatch(stream)
            with self._count_lock:
                self._streams -= 1

        if not context.add_callback(closed):
            closed()  # the RPC had already ended

    def settled(self, after: float) -> bool:
        """Whether every Watch stream has been sent its latest status (and its end, once the
        state ended them), but those whose clients have taken nothing for `after` seconds."""
        return self._senders.settled(after)

    def close(self) -> None:
        """End the sender threads, once the server has stopped."""
        self._senders.close()

    def _cut(self, stream: _Stream) -> None:
        self.cut_streams += 1
        if self.cut_streams == 1:
            log.warning(
                "cancelled a Watch stream whose client took no message for %gs (or for"
                " half a second while every sender waited on such clients); its client"
                " re-Watches (further ones are counted, not logged)",
                self._stuck_after,
                extra={"event": "watch_stream_cut"},
            )
        stream.context.cancel()
