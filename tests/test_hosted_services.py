"""The application's own services, hosted by `Server(config, services=[...])` beside SmokeService
and health, on grpc's thread-pool server."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator

import grpc
import pytest

from petsage_grpc.health import SERVING
from tests.helpers import WAIT, ThreadedServer, check


def greet(request: bytes, context: grpc.ServicerContext) -> bytes:
    return b"hello " + request


async def greet_async(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    return b"hello " + request


async def count_async(request: bytes, context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
    yield b"1"


@pytest.fixture
def greeter() -> Iterator[grpc.Channel]:
    handlers = {
        "Greet": grpc.unary_unary_rpc_method_handler(greet),
        "GreetAsync": grpc.unary_unary_rpc_method_handler(greet_async),
        "CountAsync": grpc.unary_stream_rpc_method_handler(count_async),
    }
    service = grpc.method_handlers_generic_handler("example.Greeter", handlers)
    with (
        ThreadedServer(services=[service]) as server,
        grpc.insecure_channel(server.address) as channel,
    ):
        yield channel


def test_a_hosted_service_answers_and_is_in_health(greeter):
    assert greeter.unary_unary("/example.Greeter/Greet")(b"Rex", timeout=WAIT) == b"hello Rex"
    assert check(greeter, "example.Greeter") == SERVING


@pytest.mark.parametrize("method", ["GreetAsync", "CountAsync"])
def test_an_async_handler_is_answered_unimplemented_at_once(greeter, method):
    call = greeter.unary_unary if method == "GreetAsync" else greeter.unary_stream
    with pytest.raises(grpc.RpcError) as raised:
        list(call(f"/example.Greeter/{method}")(b"", timeout=WAIT))
    assert raised.value.code() == grpc.StatusCode.UNIMPLEMENTED  # not a hang to the deadline
    assert raised.value.details() == "method not available on this server"


def test_an_async_handler_is_named_in_one_error_log(greeter, caplog):
    caplog.set_level(logging.ERROR, logger="petsage_grpc.interceptors")
    for _ in range(3):
        with pytest.raises(grpc.RpcError):
            greeter.unary_unary("/example.Greeter/GreetAsync")(b"", timeout=WAIT)
    errors = [r.getMessage() for r in caplog.records if r.name == "petsage_grpc.interceptors"]
    assert len(errors) == 1
    assert errors[0].startswith("/example.Greeter/GreetAsync is an async handler")
