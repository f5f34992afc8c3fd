"""answer_malformed on its own: which handlers it changes, and how their requests are parsed.
(tests/test_bad_input.py sends malformed bodies to a real server and reads the INTERNAL.)"""

from __future__ import annotations

import grpc
from grpc_health.v1 import health_pb2

from petsage_grpc.malformed import Malformed, answer_malformed

PARSE = health_pb2.HealthCheckRequest.FromString


async def behavior(request, context):
    return request


def unary(function=behavior) -> grpc.RpcMethodHandler:
    return grpc.unary_unary_rpc_method_handler(function, request_deserializer=PARSE)


def test_body_that_does_not_parse_becomes_malformed():
    parsed = answer_malformed(unary()).request_deserializer(b"\xff\xff")
    assert isinstance(parsed, Malformed)
    assert parsed.reason.startswith("malformed request: ")


def test_body_that_parses_is_the_message():
    body = health_pb2.HealthCheckRequest(service="x").SerializeToString()
    assert answer_malformed(unary()).request_deserializer(body).service == "x"


def test_plain_function_handler_is_left_alone():
    handler = unary(lambda request, context: request)
    assert answer_malformed(handler) is handler


def test_streamed_requests_are_left_alone():
    handler = grpc.stream_unary_rpc_method_handler(behavior, request_deserializer=PARSE)
    assert answer_malformed(handler) is handler
