"""Server interceptors: what every RPC of every service gets, written once.

`MalformedRequests`: a request body that does not parse as the method's message is answered
INTERNAL with what was wrong (as gRPC's status code table says, and as grpc-go and grpc-java do),
instead of grpc Python's UNKNOWN "Unexpected <class ...DecodeError>".
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from google.protobuf.message import DecodeError


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


def _checked(behavior: Callable[..., Any]) -> Callable[..., Any] | None:
    """`behavior`, answering INTERNAL first when the request did not parse; None if it is of a
    kind grpc.aio would run differently once wrapped (a plain function)."""
    if inspect.isasyncgenfunction(behavior):

        async def stream(request: Any, context: grpc.aio.ServicerContext) -> Any:
            if isinstance(request, _Malformed):
                await context.abort(grpc.StatusCode.INTERNAL, request.reason)
            async for response in behavior(request, context):
                yield response

        return stream
    if inspect.iscoroutinefunction(behavior):

        async def call(request: Any, context: grpc.aio.ServicerContext) -> Any:
            if isinstance(request, _Malformed):
                await context.abort(grpc.StatusCode.INTERNAL, request.reason)
            return await behavior(request, context)

        return call
    return None


class MalformedRequests(grpc.aio.ServerInterceptor):
    """Answers requests that do not parse with INTERNAL and a message saying why."""

    def __init__(self) -> None:
        self._handlers: dict[str, grpc.RpcMethodHandler | None] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        method = handler_call_details.method
        if method in self._handlers:
            return self._handlers[method]
        handler = await continuation(handler_call_details)
        wrapped = _wrap(handler)
        if handler is not None:  # an unknown method name is not kept: names are unbounded
            self._handlers[method] = wrapped
        return wrapped


def _wrap(handler: grpc.RpcMethodHandler | None) -> grpc.RpcMethodHandler | None:
    if handler is None or handler.request_streaming or handler.request_deserializer is None:
        return handler
    kind = "unary_stream" if handler.response_streaming else "unary_unary"
    checked = _checked(getattr(handler, kind))
    if checked is None:
        return handler
    parse = _tolerant(handler.request_deserializer)
    return handler._replace(request_deserializer=parse, **{kind: checked})
