"""The limits that keep the server alive under abuse: each configurable, each tried here."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Any

import grpc
import h2.errors
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from petsage_grpc.health import SERVING
from tests.helpers import WAIT, CLIProcess, RawHTTP2, ThreadedServer, check, make_config, watch

OWN_CONNECTION = [("grpc.use_local_subchannel_pool", 1)]


def test_request_larger_than_the_limit_is_resource_exhausted():
    with (
        ThreadedServer(make_config(max_receive_message_bytes=1024)) as server,
        grpc.insecure_channel(server.address) as channel,
    ):
        with pytest.raises(grpc.RpcError) as small:
            check(channel, "s" * 100)  # under the limit: looked up
        assert small.value.code() == grpc.StatusCode.NOT_FOUND
        big = health_pb2.HealthCheckRequest(service="s" * 2000)
        with pytest.raises(grpc.RpcError) as error:
            health_pb2_grpc.HealthStub(channel).Check(big, timeout=WAIT)
        assert error.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert check(channel, "") == SERVING


def test_default_limit_refuses_a_10_mb_request(server, channel):
    call = channel.unary_unary("/grpc.health.v1.Health/Check")
    with pytest.raises(grpc.RpcError) as error:
        call(b"\x0a\x80\x80\x80\x05" + b"a" * (10 * 1024 * 1024), timeout=WAIT)
    assert error.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert check(channel, "") == SERVING


@pytest.fixture
def two_streams_a_connection() -> Iterator[ThreadedServer]:
    with ThreadedServer(make_config(max_concurrent_streams=2)) as server:
        yield server


def crowd(channel: grpc.Channel) -> list[Any]:
    """Open Watch streams on the channel's connection up to its limit of two."""
    streams = [watch(channel, "") for _ in range(2)]
    for stream in streams:
        assert next(stream).status == SERVING
    return streams


def test_streams_past_the_per_connection_limit_wait(two_streams_a_connection):
    address = two_streams_a_connection.address
    with grpc.insecure_channel(address, options=OWN_CONNECTION) as crowded:
        streams = crowd(crowded)
        with pytest.raises(grpc.RpcError) as error:
            health_pb2_grpc.HealthStub(crowded).Check(health_pb2.HealthCheckRequest(), timeout=0.5)
        assert error.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        streams[0].cancel()
        assert check(crowded, "") == SERVING  # a slot is free again


def test_per_connection_stream_limit_leaves_other_connections_alone(two_streams_a_connection):
    address = two_streams_a_connection.address
    with (
        grpc.insecure_channel(address, options=OWN_CONNECTION) as crowded,
        grpc.insecure_channel(address, options=OWN_CONNECTION) as other,
    ):
        streams = crowd(crowded)
        assert check(other, "") == SERVING
        for stream in streams:
            stream.cancel()


def test_client_that_pings_too_often_is_sent_goaway_too_many_pings():
    with ThreadedServer(make_config(keepalive_min_ping_interval=60)) as server:
        port = server.server.port
        assert port is not None
        client = RawHTTP2(port)
        try:
            client.ping(count=5)
            goaway = client.wait_for_goaway()
        finally:
            client.close()
        assert goaway.error_code == h2.errors.ErrorCodes.ENHANCE_YOUR_CALM
        assert b"too_many_pings" in (goaway.additional_data or b"")
        with grpc.insecure_channel(server.address) as channel:
            assert check(channel, "") == SERVING


def test_connection_past_its_maximum_age_is_sent_goaway():
    settings = {"max_connection_age": 0.3, "max_connection_age_grace": 0.3}
    with ThreadedServer(make_config(**settings)) as server:
        port = server.server.port
        assert port is not None
        client = RawHTTP2(port)
        try:
            goaway = client.wait_for_goaway()
        finally:
            client.close()
        assert goaway.error_code == h2.errors.ErrorCodes.NO_ERROR
        with grpc.insecure_channel(server.address) as channel:  # a new connection is welcome
            assert check(channel, "") == SERVING


def test_check_keeps_answering_through_a_watch_flood(processes, server):
    flood = CLIProcess(
        [sys.executable, "-m", "tests.apps.flood", server.address, "200", "4000", "60"],
        merge_stdout=True,
    )
    processes.append(flood)
    flood.wait_for_line("^flooding$", timeout=WAIT * 3)
    assert server.state.watcher_count >= 4000
    with grpc.insecure_channel(server.address, options=OWN_CONNECTION) as channel:
        for _ in range(50):
            assert check(channel, "") == SERVING


def test_calls_whose_request_never_comes_leave_the_health_port_answering():
    # grpc's thread-pool server would hold a pool thread for each of these until the client
    # hangs up; the health-only port, the one kubelet probes, must not run out of them.
    with ThreadedServer(make_config(health_port=0)) as server:
        assert server.server.health_port is not None
        stalls = RawHTTP2(server.server.health_port)
        try:
            stalls.start_calls("/grpc.health.v1.Health/Check", 100)
            with grpc.insecure_channel(f"127.0.0.1:{server.server.health_port}") as probe:
                assert check(probe, "liveness") == SERVING  # within the wait bound
        finally:
            stalls.close()


def test_a_check_that_blocks_the_event_loop_leaves_the_health_port_answering():
    from petsage_grpc.checks.spec import CheckSpec
    from tests.apps import checks

    spec = CheckSpec(
        name="blocking",
        kind="python",
        target="tests.apps.checks:blocks_the_loop_when_asked",
        interval=0.05,
        required=False,
    )
    with (
        ThreadedServer(make_config(health_port=0, checks=(spec,))) as server,
        grpc.insecure_channel(f"127.0.0.1:{server.server.health_port}") as probe,
    ):
        assert check(probe, "liveness") == SERVING
        checks.BLOCK_THE_LOOP.set()
        assert checks.LOOP_BLOCKED.wait(WAIT)
        response = health_pb2_grpc.HealthStub(probe).Check(
            health_pb2.HealthCheckRequest(service="liveness"),
            timeout=1,  # the kubelet's
        )
        assert response.status == SERVING
        assert checks.LOOP_BLOCKED.is_set()  # answered while the main loop was held


def test_watch_streams_of_the_health_port_cannot_use_up_the_main_ports():
    settings = {"health_port": 0, "health_port_max_watch_streams": 2, "max_watch_streams": 2}
    with ThreadedServer(make_config(**settings)) as server:
        health_port = grpc.insecure_channel(f"127.0.0.1:{server.server.health_port}")
        main = grpc.insecure_channel(server.address)
        try:
            flood = [watch(health_port, "") for _ in range(2)]
            for stream in flood:
                assert next(stream).status == SERVING
            with pytest.raises(grpc.RpcError) as error:
                next(watch(health_port, ""))
            assert error.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert next(watch(main, "")).status == SERVING  # the main port's budget is intact
        finally:
            health_port.close()
            main.close()
