"""The server interceptor: what every RPC of every service gets, written once.

- In flight: each RPC is added to the server's `InFlight` as it starts and removed as it ends (the
  stop sequence and the metrics read it).
- Metrics: each RPC is counted when it ends, with its status code, and unary RPCs are timed
  (`RpcMetrics`). Calls of unknown methods are counted under one name. (A request over the size
  limit is refused by grpc core before any interceptor sees it.)
- Logs: an access log line per RPC (for grpc.health.v1 only when asked: probes would flood it),
  and a warning, with the peer, for each rejected call (at most a few a second).
- Malformed request bodies are answered INTERNAL (`malformed.answer_malformed`).

Each handler's wrapped form is made once and kept, keyed by the handler the server resolved, so
one interceptor serves any number of listeners of its kind, each with its own services.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import grpc

from petsage_grpc.inflight import InFlight, Method
from petsage_grpc.malformed import answer_malformed
from petsage_grpc.metrics import RpcMetrics
from petsage_grpc.pools import keep_hooks

log = logging.getLogger("petsage_grpc.access")
setup_log = logging.getLogger(__name__)

HEALTH_PREFIX = "/grpc.health.v1.Health/"
REJECTED = frozenset(
    {
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.PERMISSION_DENIED,
    }
)
REJECTION_LOGS_PER_SECOND = 5
UNKNOWN_METHOD: Method = ("unknown", "unknown", "unknown")
"""Where calls of methods the server does not have are counted."""

NOT_SERVING_DETAILS = "the server is not serving"
"""What a call refused while `refusing` is told."""

MAX_CACHED_HANDLERS = 10_000
"""Wrapped handlers kept; past this many, each further one is wrapped anew on every call."""

_GRPC_TYPES = {
    (False, False): ("unary_unary", "unary"),
    (False, True): ("unary_stream", "server_stream"),
    (True, False): ("stream_unary", "client_stream"),
    (True, True): ("stream_stream", "bidi_stream"),
}


class _Rejections:
    """Logs rejected calls, at most REJECTION_LOGS_PER_SECOND, counting the ones left out. Safe
    from any thread (pool threads and grpc's completion-queue thread report at once)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._second = 0
        self._logged = 0
        self._left_out = 0

    def log(self, method: str, code: grpc.StatusCode, details: str, peer: str) -> None:
        second = int(time.monotonic())
        with self._lock:
            left_out = 0
            if second != self._second:
                left_out = self._left_out
                self._second, self._logged, self._left_out = second, 0, 0
            shown = self._logged < REJECTION_LOGS_PER_SECOND
            if shown:
                self._logged += 1
            else:
                self._left_out += 1
        if left_out:
            log.warning(
                "%d more calls rejected",
                left_out,
                extra={"event": "rpc_rejected", "suppressed": left_out},
            )
        if not shown:
            return
        log.warning(
            "rejected %s from %s: %s %s",
            method,
            peer,
            code.name,
            details,
            extra={
                "event": "rpc_rejected",
                "method": method,
                "code": code.name,
                "error": details,
                "peer": peer,
            },
        )


class _Recorder(Protocol):
    """What an interceptor (for grpc.aio or for grpc's thread pool) records each RPC in."""

    metrics: RpcMetrics
    in_flight: InFlight
    access_log_health: bool
    rejections: _Rejections


class _Method:
    """What the interceptor knows of one method: its path, labels, and how to report its RPCs."""

    __slots__ = ("access", "interceptor", "label", "path", "streaming")

    def __init__(self, interceptor: _Recorder, path: str, label: Method, streaming: bool) -> None:
        self.interceptor, self.path, self.label, self.streaming = (
            interceptor,
            path,
            label,
            streaming,
        )
        self.access = interceptor.access_log_health or not path.startswith(HEALTH_PREFIX)


class _Observation:
    """One RPC being handled: in flight from its start; at its end counted with its status code,
    timed, logged."""

    __slots__ = ("_began", "_context", "_method", "_sync")

    def __init__(self, method: _Method, context: Any, sync: bool = False) -> None:
        """`context`: a grpc.aio.ServicerContext, or (`sync`) a grpc.ServicerContext."""
        self._method, self._context, self._sync = method, context, sync
        self._began = 0.0

    def __enter__(self) -> None:
        interceptor = self._method.interceptor
        interceptor.metrics.start(self._method.label)
        interceptor.in_flight.begin(self._method.label)
        self._began = time.perf_counter()

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> None:
        context = self._context
        if kind is not None and issubclass(kind, asyncio.CancelledError):
            code = grpc.StatusCode.CANCELLED
        elif (code := context.code()) is None:  # an abort carries its code
            if self._sync and not context.is_active():
                # Its client cancelled: a thread-pool handler returns as usual, or its response
                # generator is closed (GeneratorExit).
                code = grpc.StatusCode.CANCELLED
            else:  # any exception is UNKNOWN to the client
                code = grpc.StatusCode.OK if kind is None else grpc.StatusCode.UNKNOWN
        self.end(code)

    def end(self, code: grpc.StatusCode) -> None:
        """The RPC ended with `code`: count, time and log it."""
        seconds = time.perf_counter() - self._began
        method, context = self._method, self._context
        interceptor = method.interceptor
        interceptor.in_flight.end(method.label)
        interceptor.metrics.handle(method.label, code.name, None if method.streaming else seconds)
        if code in REJECTED:
            details = context.details() or ""  # bytes on grpc's thread-pool server
            if isinstance(details, bytes):
                details = details.decode(errors="replace")
            interceptor.rejections.log(method.path, code, details, context.peer())
        elif method.access:
            log.info(
                "%s %s %.2fms %s",
                method.path,
                code.name,
                seconds * 1000,
                context.peer(),
                extra={
                    "event": "rpc",
                    "method": method.path,
                    "code": code.name,
                    "duration_ms": round(seconds * 1000, 3),
                    "peer": context.peer(),
                },
            )


class _Interceptor:
    """What both interceptors share: where they record, and the wrapped handlers they keep."""

    def __init__(
        self, metrics: RpcMetrics, in_flight: InFlight, *, access_log_health: bool = False
    ) -> None:
        self.metrics = metrics
        self.in_flight = in_flight
        self.access_log_health = access_log_health
        self.rejections = _Rejections()
        self.refusing = False
        """Every call answered UNAVAILABLE, none handled: for a server whose start failed, which
        starts its gRPC servers only to free their ports."""
        # The handler each listener resolved, and its wrapped form (the handler is kept, so its
        # id is never reused while the entry lives).
        self._wrapped: dict[int, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}
        self._lock = threading.Lock()

    def _intercepted(self, path: str, handler: grpc.RpcMethodHandler | None) -> Any:
        """`handler` wrapped (made once, then kept); None counted as an unknown method."""
        if handler is None:  # grpc answers UNIMPLEMENTED; counted under one name (unbounded)
            self.metrics.start(UNKNOWN_METHOD)
            self.metrics.handle(UNKNOWN_METHOD, "UNIMPLEMENTED", None)
            return None
        if self.refusing:
            kind, _ = _GRPC_TYPES[(handler.request_streaming, handler.response_streaming)]
            return handler._replace(**{kind: self._refuse})
        known = self._wrapped.get(id(handler))
        if known is not None:
            return known[1]
        kind, grpc_type = _GRPC_TYPES[(handler.request_streaming, handler.response_streaming)]
        service, _, name = path[1:].rpartition("/")
        method = _Method(self, path, (service, name, grpc_type), handler.response_streaming)
        wrapped = self._wrap(method, kind, handler)
        with self._lock:
            if len(self._wrapped) < MAX_CACHED_HANDLERS:  # a generic handler may make one a call
                self._wrapped[id(handler)] = (handler, wrapped)
        return wrapped

    def _wrap(
        self, method: _Method, kind: str, handler: grpc.RpcMethodHandler
    ) -> grpc.RpcMethodHandler:
        """`handler` of `method`, its `kind` behaviour observed."""
        raise NotImplementedError

    @staticmethod
    def _refuse(request: Any, context: Any) -> Any:
        """A call made while `refusing`, answered without its handler."""
        raise NotImplementedError


class ServerInterceptor(_Interceptor, grpc.aio.ServerInterceptor):
    """Tracks, counts, times and logs every RPC, and answers malformed requests INTERNAL."""

    @staticmethod
    async def _refuse(request: Any, context: grpc.aio.ServicerContext) -> None:
        await context.abort(grpc.StatusCode.UNAVAILABLE, NOT_SERVING_DETAILS)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        path = handler_call_details.method
        return self._intercepted(path, await continuation(handler_call_details))

    def _wrap(
        self, method: _Method, kind: str, handler: grpc.RpcMethodHandler
    ) -> grpc.RpcMethodHandler:
        handler = answer_malformed(handler)
        behavior = getattr(handler, kind)

        if inspect.isasyncgenfunction(behavior):

            async def stream(request: Any, context: grpc.aio.ServicerContext) -> Any:
                with _Observation(method, context):
                    async for response in behavior(request, context):
                        yield response

            return handler._replace(**{kind: stream})

        if inspect.iscoroutinefunction(behavior):

            async def call(request: Any, context: grpc.aio.ServicerContext) -> Any:
                with _Observation(method, context):
                    return await behavior(request, context)

            return handler._replace(**{kind: call})
        return handler  # a plain function, which grpc.aio would run differently once wrapped


class SyncServerInterceptor(_Interceptor, grpc.ServerInterceptor):
    """The same as ServerInterceptor, for grpc's thread-pool server (`grpc.server`). A Watch on
    grpc's non-blocking path stays on it (the wrapper keeps `experimental_non_blocking`, or
    grpcio would give every open stream a pool thread), and is counted when it ends; a handler
    on a pool of its own stays there (`experimental_thread_pool`)."""

    @staticmethod
    def _refuse(request: Any, context: grpc.ServicerContext) -> None:
        context.abort(grpc.StatusCode.UNAVAILABLE, NOT_SERVING_DETAILS)

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        path = handler_call_details.method
        return self._intercepted(path, continuation(handler_call_details))

    def _wrap(
        self, method: _Method, kind: str, handler: grpc.RpcMethodHandler
    ) -> grpc.RpcMethodHandler:
        behavior = getattr(handler, kind)
        if inspect.iscoroutinefunction(behavior) or inspect.isasyncgenfunction(behavior):
            # grpcio would call it, get a coroutine, and leave the call hanging or answer
            # UNKNOWN: say so once to the operator, and answer each call at once.
            setup_log.error(
                "%s is an async handler, which grpc's thread-pool server cannot run: its calls "
                "are answered UNIMPLEMENTED (give the server plain functions)",
                method.path,
                extra={"event": "async_handler", "method": method.path},
            )
            handler = handler._replace(**{kind: _not_served})
        handler = answer_malformed(handler, sync=True)
        behavior = getattr(handler, kind)
        wrapped: Callable[..., Any]

        if getattr(behavior, "experimental_non_blocking", False):

            def non_blocking(request: Any, context: grpc.ServicerContext, send: Any = None) -> None:
                observation = _Observation(method, context)
                observation.__enter__()
                finished: list[bool] = []

                def sending(message: Any) -> None:
                    if message is None:
                        finished.append(True)
                    send(message)

                def ended() -> None:  # on grpc's completion-queue thread: never wait
                    ok = grpc.StatusCode.OK if finished else grpc.StatusCode.CANCELLED
                    observation.end(context.code() or ok)

                try:
                    behavior(request, context, sending)
                except BaseException:
                    observation.end(context.code() or grpc.StatusCode.UNKNOWN)
                    raise
                if not context.add_callback(ended):
                    ended()

            wrapped = non_blocking
        elif handler.response_streaming:

            def stream(request: Any, context: grpc.ServicerContext) -> Any:
                with _Observation(method, context, sync=True):
                    yield from behavior(request, context)

            wrapped = stream
        else:

            def call(request: Any, context: grpc.ServicerContext) -> Any:
                with _Observation(method, context, sync=True):
                    return behavior(request, context)

            wrapped = call
        return handler._replace(**{kind: keep_hooks(wrapped, behavior)})


def _not_served(request: Any, context: grpc.ServicerContext) -> None:
    """A method whose handler this server cannot run (the operator's log says why)."""
    context.abort(grpc.StatusCode.UNIMPLEMENTED, "method not available on this server")
