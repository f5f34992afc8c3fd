"""The application's own services, hosted by `Server(config, services=[...])` beside SmokeService
and health, on grpc's thread-pool server."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Iterator

import grpc
import pytest

from petsage_grpc.health import SERVING
from tests.helpers import WAIT, ThreadedServer, check, wait_until


def greet(request: bytes, context: grpc.ServicerContext) -> bytes:
    return b"hello " + request


def ticks(request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
    while True:  # until its client cancels
        yield b"tick"
        time.sleep(0.01)  # the pace of the RPC under test, not a wait of the test


async def greet_async(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    return b"hello " + request


async def count_async(request: bytes, context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
    yield b"1"


@pytest.fixture
def greeter(hosting: ThreadedServer) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(hosting.address) as channel:
        yield channel


@pytest.fixture
def hosting() -> Iterator[ThreadedServer]:
    handlers = {
        "Greet": grpc.unary_unary_rpc_method_handler(greet),
        "Ticks": grpc.unary_stream_rpc_method_handler(ticks),
        "GreetAsync": grpc.unary_unary_rpc_method_handler(greet_async),
        "CountAsync": grpc.unary_stream_rpc_method_handler(count_async),
    }
    service = grpc.method_handlers_generic_handler("example.Greeter", handlers)
    with ThreadedServer(services=[service]) as server:
        yield server


def test_a_hosted_service_answers_and_is_in_health(greeter):
    assert greeter.unary_unary("/example.Greeter/Greet")(b"Rex", timeout=WAIT) == b"hello Rex"
    assert check(greeter, "example.Greeter") == SERVING


def test_a_hosted_stream_its_client_cancels_is_counted_cancelled(hosting, greeter):
    stream = greeter.unary_stream("/example.Greeter/Ticks")(b"", timeout=WAIT)
    assert [next(stream), next(stream)] == [b"tick", b"tick"]
    stream.cancel()
    method = ("example.Greeter", "Ticks", "server_stream")
    handled = hosting.server.metrics.handled
    wait_until(lambda: (method, "CANCELLED") in handled, what="the stream to be counted")
    assert [code for (counted, code) in handled if counted == method] == ["CANCELLED"]


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
