"""Malformed requests answered INTERNAL, as gRPC's status code table says (and grpc-go and
grpc-java do), with what was wrong, instead of grpc Python's UNKNOWN
"Unexpected <class ...DecodeError>".

`answer_malformed(handler)` gives a method handler whose request parser never raises: a body that
does not parse becomes a `Malformed` request, and the method answers it INTERNAL without running.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import grpc
from google.protobuf.message import DecodeError

from petsage_grpc.pools import keep_hooks


class Malformed:
    """Stands for a request body that did not parse as the method's message."""

    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        self.reason = reason


def tolerant(deserialize: Callable[[bytes], Any]) -> Callable[[bytes], Any]:
    """`deserialize`, returning a Malformed request where it would raise DecodeError."""

    def parse(data: bytes) -> Any:
        try:
            return deserialize(data)
        except DecodeError as exc:
            return Malformed(f"malformed request: {exc}")

    return parse


def answer_malformed(
    handler: grpc.RpcMethodHandler, *, sync: bool = False
) -> grpc.RpcMethodHandler:
    """`handler`, answering a malformed request INTERNAL; unchanged where there is nothing to
    parse (streamed requests, no deserializer). For grpc.aio (the default) plain functions are
    left alone (grpc.aio runs them in its executor, and would not once wrapped); with `sync`,
    for grpc's thread-pool server, plain functions are what it wraps."""
    if handler.request_streaming or handler.request_deserializer is None:
        return handler
    kind = "unary_stream" if handler.response_streaming else "unary_unary"
    behavior = getattr(handler, kind)
    if sync:
        return _answer_malformed_sync(handler, kind, behavior)

    if inspect.isasyncgenfunction(behavior):

        async def stream(request: Any, context: grpc.aio.ServicerContext) -> Any:
            if isinstance(request, Malformed):
                await context.abort(grpc.StatusCode.INTERNAL, request.reason)
            async for response in behavior(request, context):
                yield response

        wrapped: Callable[..., Any] = stream
    elif inspect.iscoroutinefunction(behavior):

        async def call(request: Any, context: grpc.aio.ServicerContext) -> Any:
            if isinstance(request, Malformed):
                await context.abort(grpc.StatusCode.INTERNAL, request.reason)
            return await behavior(request, context)

        wrapped = call
    else:
        return handler
    return handler._replace(
        **{kind: wrapped, "request_deserializer": tolerant(handler.request_deserializer)}
    )


def _answer_malformed_sync(
    handler: grpc.RpcMethodHandler, kind: str, behavior: Callable[..., Any]
) -> grpc.RpcMethodHandler:
    wrapped: Callable[..., Any]
    if getattr(behavior, "experimental_non_blocking", False):

        def non_blocking(request: Any, context: grpc.ServicerContext, send: Any = None) -> Any:
            if isinstance(request, Malformed):
                context.abort(grpc.StatusCode.INTERNAL, request.reason)
            return behavior(request, context, send)

        wrapped = non_blocking
    elif inspect.isgeneratorfunction(behavior):

        def stream(request: Any, context: grpc.ServicerContext) -> Any:
            if isinstance(request, Malformed):
                context.abort(grpc.StatusCode.INTERNAL, request.reason)
            yield from behavior(request, context)

        wrapped = stream
    else:

        def call(request: Any, context: grpc.ServicerContext) -> Any:
            if isinstance(request, Malformed):
                context.abort(grpc.StatusCode.INTERNAL, request.reason)
            return behavior(request, context)

        wrapped = call
    return handler._replace(
        **{
            kind: keep_hooks(wrapped, behavior),
            "request_deserializer": tolerant(handler.request_deserializer),
        }
    )
