"""The server interceptor: what every RPC of every service gets, written once.

- Metrics: each RPC is counted when it starts and when it ends, with its status code, and unary
  RPCs are timed (`RpcMetrics`). Calls of unknown methods are counted under one name. (A request
  over the size limit is refused by grpc core before any interceptor sees it.)
- Malformed requests: a body that does not parse as the method's message is answered INTERNAL
  with what was wrong (as gRPC's status code table says, and grpc-go and grpc-java do), instead
  of grpc Python's UNKNOWN "Unexpected <class ...DecodeError>".
- Logs: an access log line per RPC (for grpc.health.v1 only when asked: probes would flood it),
  and a warning, with the peer, for each rejected call (at most a few a second).

Each method's wrapped handler is made once and kept.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from google.protobuf.message import DecodeError

from petsage_grpc.metrics import Method, RpcMetrics

log = logging.getLogger("petsage_grpc.access")

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


class _Malformed:
    """Stands for a request that did not parse; the handler answers INTERNAL."""

    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        self.reason = reason


def _tolerant(deserialize: Callable[[bytes], Any]) -> Callable[[bytes], Any]:
    def parse(data: bytes) -> Any:
        try:
            return deserialize(data)
        except DecodeError as exc:
            return _Malformed(f"malformed request: {exc}")

    return parse


class _Rejections:
    """Logs rejected calls, at most REJECTION_LOGS_PER_SECOND, counting the ones left out."""

    def __init__(self) -> None:
        self._second = 0
        self._logged = 0
        self._left_out = 0

    def log(self, method: str, code: grpc.StatusCode, details: str, peer: str) -> None:
        second = int(time.monotonic())
        if second != self._second:
            if self._left_out:
                log.warning(
                    "%d more calls rejected",
                    self._left_out,
                    extra={"event": "rpc_rejected", "suppressed": self._left_out},
                )
            self._second, self._logged, self._left_out = second, 0, 0
        if self._logged >= REJECTION_LOGS_PER_SECOND:
            self._left_out += 1
            return
        self._logged += 1
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


class _Observation:
    """One RPC being handled: counted when it starts, and when it ends with its status code."""

    __slots__ = ("_access", "_began", "_context", "_interceptor", "_method", "_path", "_streaming")

    def __init__(
        self,
        interceptor: ServerInterceptor,
        path: str,
        method: Method,
        context: grpc.aio.ServicerContext,
        access: bool,
        *,
        streaming: bool,
    ) -> None:
        self._interceptor, self._path, self._method = interceptor, path, method
        self._context, self._access, self._streaming = context, access, streaming
        self._began = 0.0

    def __enter__(self) -> None:
        self._interceptor.metrics.start(self._method)
        self._began = time.perf_counter()

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> None:
        if kind is None:
            code = self._context.code() or grpc.StatusCode.OK
        elif issubclass(kind, asyncio.CancelledError):
            code = grpc.StatusCode.CANCELLED
        else:  # an abort carries its code; any other exception is UNKNOWN to the client
            code = self._context.code() or grpc.StatusCode.UNKNOWN
        self._interceptor._end(
            self._path,
            self._method,
            code,
            self._began,
            self._context,
            self._access,
            streaming=self._streaming,
        )


class ServerInterceptor(grpc.aio.ServerInterceptor):
    """Counts, times and logs every RPC, and answers malformed requests INTERNAL."""

    def __init__(self, metrics: RpcMetrics, *, access_log_health: bool = False) -> None:
        self.metrics = metrics
        self._access_log_health = access_log_health
        self._rejections = _Rejections()
        self._handlers: dict[str, grpc.RpcMethodHandler | None] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        path = handler_call_details.method
        if path in self._handlers:
            return self._handlers[path]
        handler = await continuation(handler_call_details)
        if handler is None:  # grpc answers UNIMPLEMENTED; counted under one name (unbounded)
            self.metrics.start(UNKNOWN_METHOD)
            self.metrics.handle(UNKNOWN_METHOD, "UNIMPLEMENTED", None)
            return handler
        wrapped = self._wrap(path, handler)
        self._handlers[path] = wrapped
        return wrapped

    def _wrap(self, path: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        kind = {
            (False, False): "unary_unary",
            (False, True): "unary_stream",
            (True, False): "stream_unary",
            (True, True): "stream_stream",
        }[(handler.request_streaming, handler.response_streaming)]
        behavior = getattr(handler, kind)
        service, _, name = path[1:].rpartition("/")
        grpc_type = {
            "unary_unary": "unary",
            "unary_stream": "server_stream",
            "stream_unary": "client_stream",
            "stream_stream": "bidi_stream",
        }[kind]
        observed = self._observed(
            behavior, path, (service, name, grpc_type), handler.response_streaming
        )
        if observed is None:
            return handler
        changes: dict[str, Any] = {kind: observed}
        if not handler.request_streaming and handler.request_deserializer is not None:
            changes["request_deserializer"] = _tolerant(handler.request_deserializer)
        return handler._replace(**changes)

    def _observed(
        self, behavior: Callable[..., Any], path: str, method: Method, streaming: bool
    ) -> Callable[..., Any] | None:
        """`behavior`, counted, timed, logged; None for a plain function, which grpc.aio would
        run differently once wrapped."""
        access = self._access_log_health or not path.startswith(HEALTH_PREFIX)

        if inspect.isasyncgenfunction(behavior):

            async def stream(request: Any, context: grpc.aio.ServicerContext) -> Any:
                with _Observation(self, path, method, context, access, streaming=True):
                    if isinstance(request, _Malformed):
                        await context.abort(grpc.StatusCode.INTERNAL, request.reason)
                    async for response in behavior(request, context):
                        yield response

            return stream

        if inspect.iscoroutinefunction(behavior):

            async def call(request: Any, context: grpc.aio.ServicerContext) -> Any:
                with _Observation(self, path, method, context, access, streaming=streaming):
                    if isinstance(request, _Malformed):
                        await context.abort(grpc.StatusCode.INTERNAL, request.reason)
                    return await behavior(request, context)

            return call
        return None

    def _end(
        self,
        path: str,
        method: Method,
        code: grpc.StatusCode,
        began: float,
        context: grpc.aio.ServicerContext,
        access: bool,
        *,
        streaming: bool,
    ) -> None:
        seconds = time.perf_counter() - began
        self.metrics.handle(method, code.name, None if streaming else seconds)
        if code in REJECTED:
            self._rejections.log(path, code, context.details() or "", context.peer())
        elif access:
            log.info(
                "%s %s %.2fms %s",
                path,
                code.name,
                seconds * 1000,
                context.peer(),
                extra={
                    "event": "rpc",
                    "method": path,
                    "code": code.name,
                    "duration_ms": round(seconds * 1000, 3),
                    "peer": context.peer(),
                },
            )
