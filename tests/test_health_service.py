"""grpc.health.v1.Health over real sockets: Check, Watch and List as the spec says."""

from __future__ import annotations

import asyncio
import collections
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from petsage_grpc.health import NOT_SERVING, SERVICE_UNKNOWN, SERVING, UNKNOWN, HealthState
from tests.helpers import (
    WAIT,
    ThreadedServer,
    check,
    make_config,
    open_never_reading_watch,
    statuses_until,
    wait_until,
    watch,
)


def test_check_whole_server_is_serving(channel):
    assert check(channel, "") == SERVING


def test_check_smoke_service_is_serving(channel):
    assert check(channel, "petsage.v1.SmokeService") == SERVING


def test_check_unknown_service_fails_not_found(channel):
    with pytest.raises(grpc.RpcError) as error:
        check(channel, "no.such.Service")
    assert error.value.code() == grpc.StatusCode.NOT_FOUND
    assert "no.such.Service" in error.value.details()


def test_check_follows_status_changes(server, channel):
    server.state.set("petsage.v1.SmokeService", NOT_SERVING)
    assert check(channel, "petsage.v1.SmokeService") == NOT_SERVING


def test_watch_sends_current_status_at_once(channel):
    stream = watch(channel, "")
    assert next(stream).status == SERVING
    stream.cancel()


def test_watch_sends_each_change(server, channel):
    stream = watch(channel, "")
    assert next(stream).status == SERVING
    server.state.set("", NOT_SERVING)
    assert next(stream).status == NOT_SERVING
    server.state.set("", SERVING)
    assert next(stream).status == SERVING
    stream.cancel()


def test_watch_skips_a_set_that_changes_nothing(server, channel):
    stream = watch(channel, "")
    assert next(stream).status == SERVING
    server.state.set("", SERVING)
    server.state.end_watches()  # after anything the set sent: the stream ends with no message
    assert [response.status for response in stream] == []


def test_watch_unknown_service_streams_service_unknown_then_its_status(server, channel):
    stream = watch(channel, "late.Service")
    assert next(stream).status == SERVICE_UNKNOWN
    server.state.set("late.Service", SERVING)
    assert next(stream).status == SERVING
    stream.cancel()


def test_list_returns_every_service_with_its_status(server, channel):
    server.state.set("other.Service", NOT_SERVING)
    response = health_pb2_grpc.HealthStub(channel).List(
        health_pb2.HealthListRequest(), timeout=WAIT
    )
    statuses = {name: r.status for name, r in response.statuses.items()}
    assert statuses == {
        "": SERVING,
        "liveness": SERVING,
        "readiness": SERVING,
        "petsage.v1.SmokeService": SERVING,
        "other.Service": NOT_SERVING,
    }


def test_list_fails_resource_exhausted_past_100_services(server, channel):
    for i in range(101 - len(server.state.statuses())):
        server.state.set(f"svc{i}", SERVING)
    with pytest.raises(grpc.RpcError) as error:
        health_pb2_grpc.HealthStub(channel).List(health_pb2.HealthListRequest(), timeout=WAIT)
    assert error.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_list_answers_with_exactly_100_services(server, channel):
    for i in range(100 - len(server.state.statuses())):
        server.state.set(f"svc{i}", SERVING)
    response = health_pb2_grpc.HealthStub(channel).List(
        health_pb2.HealthListRequest(), timeout=WAIT
    )
    assert len(response.statuses) == 100


def test_never_reading_watcher_stalls_neither_status_changes_nor_other_clients(server, channel):
    stuck = open_never_reading_watch(server.server.port, "flappy")
    try:
        wait_until(lambda: server.state.watcher_count == 1, what="the stuck Watch to open")
        normal = [watch(channel, "flappy") for _ in range(3)]
        for stream in normal:
            assert next(stream).status == SERVICE_UNKNOWN
        for i in range(200):
            server.state.set("flappy", SERVING if i % 2 == 0 else NOT_SERVING)
        server.state.set("flappy", UNKNOWN)  # a final status distinct from every flip
        for stream in normal:
            assert statuses_until(stream, UNKNOWN)[-1] == UNKNOWN
            stream.cancel()
        assert check(channel, "") == SERVING
        assert server.state.watcher_count >= 1  # the stuck stream is still open, still stuck
    finally:
        stuck.close()
    wait_until(lambda: server.state.watcher_count == 0, what="every Watch to close")


@pytest.mark.parametrize("read_first", [False, True], ids=["while_opening", "once_streaming"])
def test_server_answers_after_a_thousand_watch_streams_are_cancelled_at_once(server, read_first):
    async def burst() -> None:
        channels = [
            grpc.aio.insecure_channel(
                server.address, options=[("grpc.use_local_subchannel_pool", 1)]
            )
            for _ in range(10)
        ]  # ten connections
        try:
            calls = [
                health_pb2_grpc.HealthStub(channels[i % 10]).Watch(
                    health_pb2.HealthCheckRequest(service=""), timeout=WAIT * 3
                )
                for i in range(1000)
            ]
            if read_first:
                firsts = await asyncio.gather(*(call.read() for call in calls))
                assert {first.status for first in firsts} == {SERVING}
            for call in calls:
                call.cancel()
        finally:
            for chan in channels:
                await chan.close()

    asyncio.run(burst())
    wait_until(lambda: server.state.watcher_count == 0, what="every Watch to close")
    with grpc.insecure_channel(server.address) as chan:
        assert check(chan, "") == SERVING


def test_a_state_that_served_before_serves_watch_again():
    state = HealthState()
    with ThreadedServer(state=state):
        pass
    with ThreadedServer(state=state) as second, grpc.insecure_channel(second.address) as chan:
        stream = watch(chan, "")
        assert next(stream).status == SERVING
        second.state.set("", NOT_SERVING)
        assert next(stream).status == NOT_SERVING
        stream.cancel()


def test_watch_streams_end_ok_when_the_server_stops():
    with ThreadedServer() as running, grpc.insecure_channel(running.address) as chan:
        stream = watch(chan, "")
        assert next(stream).status == SERVING
        running.run(running.server.drain_and_stop())
        assert [r.status for r in stream] == [NOT_SERVING]
        assert stream.code() == grpc.StatusCode.OK


def test_thousands_of_reading_watch_streams_all_get_not_serving_then_ok_at_the_stop():
    # More streams than the senders reach within the stop's half a second for clients that
    # read nothing: each must still be sent NOT_SERVING and its end, not be cut.
    count = 3000

    async def watch_until_the_end(server: ThreadedServer) -> collections.Counter[Any]:
        # A connection each (at most 1,000 streams on one), as many clients would have.
        options = [("grpc.use_local_subchannel_pool", 1)]
        channels = [grpc.aio.insecure_channel(server.address, options=options) for _ in range(4)]
        first = asyncio.Semaphore(0)
        outcomes: collections.Counter[Any] = collections.Counter()

        async def one(channel: grpc.aio.Channel) -> None:
            seen = []
            call = health_pb2_grpc.HealthStub(channel).Watch(
                health_pb2.HealthCheckRequest(service=""), timeout=60
            )
            try:
                async for response in call:
                    seen.append(response.status)
                    if len(seen) == 1:
                        first.release()
                outcomes[(*seen, "OK")] += 1
            except grpc.aio.AioRpcError as error:
                outcomes[(*seen, error.code().name)] += 1

        streams = [asyncio.ensure_future(one(channels[i % 4])) for i in range(count)]
        for _ in range(count):
            await asyncio.wait_for(first.acquire(), WAIT)
        stopping = asyncio.run_coroutine_threadsafe(server.server.drain_and_stop(), server.loop)
        await asyncio.wait_for(asyncio.gather(*streams), 60)
        assert await asyncio.wait_for(asyncio.wrap_future(stopping), WAIT)
        for channel in channels:
            await channel.close()
        return outcomes

    with limited(max_watch_streams=count) as server:
        outcomes = asyncio.run(watch_until_the_end(server))
    assert outcomes == {(SERVING, NOT_SERVING, "OK"): count}


def limited(**limits) -> ThreadedServer:
    return ThreadedServer(make_config(**limits))


def test_watch_streams_past_the_limit_fail_resource_exhausted():
    with limited(max_watch_streams=2) as server, grpc.insecure_channel(server.address) as chan:
        open_streams = [watch(chan, "") for _ in range(2)]
        for stream in open_streams:
            assert next(stream).status == SERVING
        refused = watch(chan, "")
        with pytest.raises(grpc.RpcError) as error:
            next(refused)
        assert error.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert check(chan, "") == SERVING
        open_streams[0].cancel()
        wait_until(lambda: server.state.watcher_count == 1, what="the cancelled stream to close")
        again = watch(chan, "")
        assert next(again).status == SERVING


def test_watching_too_many_unknown_names_fails_but_known_names_still_work():
    with limited(max_unknown_services=2) as server, grpc.insecure_channel(server.address) as chan:
        unknown = [watch(chan, f"random.Name{i}") for i in range(2)]
        for stream in unknown:
            assert next(stream).status == SERVICE_UNKNOWN
        another_on_same_name = watch(chan, "random.Name0")
        assert next(another_on_same_name).status == SERVICE_UNKNOWN
        with pytest.raises(grpc.RpcError) as error:
            next(watch(chan, "random.Name2"))
        assert error.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        known = watch(chan, "readiness")
        assert next(known).status == SERVING


def test_service_name_past_200_bytes_is_invalid_argument(channel):
    long_name = "s" * 201
    with pytest.raises(grpc.RpcError) as error:
        check(channel, long_name)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.RpcError) as error:
        next(watch(channel, long_name))
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_service_name_of_200_bytes_is_looked_up(channel):
    with pytest.raises(grpc.RpcError) as error:
        check(channel, "é" * 100)  # 200 bytes in UTF-8
    assert error.value.code() == grpc.StatusCode.NOT_FOUND
