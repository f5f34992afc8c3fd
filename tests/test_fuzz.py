"""Fuzzing the request decoding and servicer paths of a running server with hypothesis.

`make test` runs a brief pass; `make fuzz` a long one (PETSAGE_FUZZ_EXAMPLES examples each).
Every request, however malformed, gets a status from the expected set, and the server keeps
answering.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import grpc
import pytest
from grpc_health.v1 import health_pb2
from hypothesis import given, settings
from hypothesis import strategies as st

from petsage_grpc.health import SERVING
from tests.helpers import ThreadedServer, check

EXAMPLES = int(os.environ.get("PETSAGE_FUZZ_EXAMPLES", "100"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None)
CALL_DEADLINE = 5.0

UNARY = [
    "/grpc.health.v1.Health/Check",
    "/grpc.health.v1.Health/List",
    "/petsage.v1.SmokeService/SmokeTest",
]
EXPECTED = {
    grpc.StatusCode.OK,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.INTERNAL,  # a body that does not parse
    grpc.StatusCode.RESOURCE_EXHAUSTED,
}


@pytest.fixture(scope="module")
def channel() -> Iterator[grpc.Channel]:
    with ThreadedServer() as server, grpc.insecure_channel(server.address) as chan:
        yield chan
        assert check(chan, "") == SERVING  # still answering after everything


def code_of(call) -> grpc.StatusCode:
    try:
        call()
    except grpc.RpcError as error:
        return error.code()
    return grpc.StatusCode.OK


@FUZZ
@given(method=st.sampled_from(UNARY), body=st.binary(max_size=1024))
def test_any_unary_request_body_gets_an_expected_status(channel, method, body):
    code = code_of(lambda: channel.unary_unary(method)(body, timeout=CALL_DEADLINE))
    assert code in EXPECTED


@FUZZ
@given(body=st.binary(max_size=1024))
def test_any_watch_request_body_gets_a_status_or_a_first_message(channel, body):
    stream = channel.unary_stream("/grpc.health.v1.Health/Watch")(body, timeout=CALL_DEADLINE)
    code = code_of(lambda: next(stream))
    stream.cancel()
    assert code in EXPECTED


@FUZZ
@given(service=st.text(max_size=300))
def test_any_service_name_is_looked_up_or_refused(channel, service):
    request = health_pb2.HealthCheckRequest(service=service)
    call = channel.unary_unary(
        "/grpc.health.v1.Health/Check",
        request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
        response_deserializer=health_pb2.HealthCheckResponse.FromString,
    )
    code = code_of(lambda: call(request, timeout=CALL_DEADLINE))
    too_long = len(service.encode()) > 200
    if service in ("", "liveness", "readiness", "petsage.v1.SmokeService"):
        assert code == grpc.StatusCode.OK
    else:
        assert code == (grpc.StatusCode.INVALID_ARGUMENT if too_long else grpc.StatusCode.NOT_FOUND)
