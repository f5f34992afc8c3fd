"""SyncHealthServicer on grpc's thread-pool server, with real clients on loopback: the protocol,
and grpc-go's Watch semantics where grpcio-health-checking's servicer stalls or deadlocks."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from petsage_grpc import sync_health
from petsage_grpc.health import NOT_SERVING, SERVICE_UNKNOWN, SERVING, UNKNOWN, HealthState
from petsage_grpc.inflight import InFlight
from petsage_grpc.interceptors import SyncServerInterceptor
from petsage_grpc.metrics import RpcMetrics
from petsage_grpc.sync_health import MAX_SENDERS, SyncHealthServicer
from tests.helpers import WAIT, check, open_never_reading_watch, statuses_until, wait_until, watch


@dataclass
class Running:
    state: HealthState
    servicer: SyncHealthServicer
    port: int

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"


@contextlib.contextmanager
def serve(workers: int = 10, **settings: object) -> Iterator[Running]:
    state = HealthState()
    state.set("", SERVING)
    servicer = SyncHealthServicer(state, **settings)  # type: ignore[arg-type]
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=workers))
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield Running(state, servicer, port)
    finally:
        server.stop(None).wait(WAIT)


@pytest.fixture
def running() -> Iterator[Running]:
    with serve() as started:
        yield started


@pytest.fixture
def channel(running: Running) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(running.address) as channel:
        yield channel


def test_check_answers_the_status(running, channel):
    assert check(channel, "") == SERVING


def test_check_of_an_unknown_service_is_not_found(channel):
    with pytest.raises(grpc.RpcError) as failed:
        check(channel, "no.such.Service")
    assert failed.value.code() == grpc.StatusCode.NOT_FOUND


def test_list_gives_every_service(running, channel):
    running.state.set("a", NOT_SERVING)
    stub = health_pb2_grpc.HealthStub(channel)
    answer = stub.List(health_pb2.HealthListRequest(), timeout=WAIT)
    assert {name: r.status for name, r in answer.statuses.items()} == {
        "": SERVING,
        "a": NOT_SERVING,
    }


def test_watch_gives_the_status_then_each_change(running, channel):
    stream = watch(channel, "a")
    assert next(stream).status == SERVICE_UNKNOWN
    running.state.set("a", SERVING)
    running.state.set("a", NOT_SERVING)
    assert statuses_until(stream, NOT_SERVING)[-1] == NOT_SERVING
    stream.cancel()


def test_fifty_open_watch_streams_hold_no_pool_thread():
    with serve(workers=10) as running, grpc.insecure_channel(running.address) as channel:
        streams = [watch(channel, "") for _ in range(50)]
        for stream in streams:
            assert next(stream).status == SERVING
        assert check(channel, "") == SERVING  # a pool of 10 threads still answers
        for stream in streams:
            stream.cancel()


def test_end_watches_ends_every_stream_with_ok(running, channel):
    stream = watch(channel, "")
    assert next(stream).status == SERVING
    running.state.shutdown()
    running.state.end_watches()
    assert [r.status for r in stream] == [NOT_SERVING]  # then the stream ends, without error


def test_never_reading_watcher_stalls_neither_set_nor_others_nor_check(running, channel):
    stuck = open_never_reading_watch(running.port, "flappy")
    try:
        wait_until(lambda: running.state.watcher_count == 1, what="the stuck Watch to open")
        normal = [watch(channel, "flappy") for _ in range(3)]
        for stream in normal:
            assert next(stream).status == SERVICE_UNKNOWN
        for i in range(200):
            running.state.set("flappy", SERVING if i % 2 == 0 else NOT_SERVING)
        running.state.set("flappy", UNKNOWN)
        for stream in normal:
            assert statuses_until(stream, UNKNOWN)[-1] == UNKNOWN
            stream.cancel()
        assert check(channel, "") == SERVING
    finally:
        stuck.close()
    wait_until(lambda: running.state.watcher_count == 0, what="every Watch to close")


def test_streams_cancelled_during_sets_deadlock_nothing(running, channel):
    streams = [watch(channel, "churn") for _ in range(200)]
    for stream in streams:
        assert next(stream).status == SERVICE_UNKNOWN
    setting = threading.Thread(
        target=lambda: [running.state.set("churn", SERVING if i % 2 else NOT_SERVING)
                        for i in range(500)]
    )  # fmt: skip
    setting.start()
    for stream in streams[:100]:
        stream.cancel()
    setting.join(WAIT)
    assert not setting.is_alive()
    running.state.set("churn", UNKNOWN)
    for stream in streams[100:]:
        assert statuses_until(stream, UNKNOWN)[-1] == UNKNOWN
        stream.cancel()
    assert check(channel, "") == SERVING


def test_stream_whose_client_reads_nothing_is_cut_after_the_bound():
    with serve(stuck_after=0.5) as running:
        stuck = open_never_reading_watch(running.port, "")
        try:
            wait_until(lambda: running.servicer.cut_streams == 1, what="the cut")
            wait_until(lambda: running.state.watcher_count == 0, what="the stream to close")
        finally:
            stuck.close()


def test_a_bound_under_the_spare_delay_still_cuts(monkeypatch):
    monkeypatch.setattr(sync_health, "SPARE_AFTER", 3600.0)  # only the bound can cut now
    with serve(stuck_after=0.1) as running:
        stuck = open_never_reading_watch(running.port, "")
        try:
            wait_until(lambda: running.servicer.cut_streams == 1, what="the cut")
        finally:
            stuck.close()


def test_a_slow_send_gets_spare_senders_for_the_others():
    with serve() as running:
        stuck = [open_never_reading_watch(running.port, "s") for _ in range(3)]
        try:
            with grpc.insecure_channel(running.address) as channel:
                normal = watch(channel, "s")
                assert next(normal).status == SERVICE_UNKNOWN
                running.state.set("s", SERVING)
                assert next(normal).status == SERVING  # within the stream's deadline
                normal.cancel()
        finally:
            for sock in stuck:
                sock.close()


@contextlib.contextmanager
def serve_intercepted(workers: int = 10) -> Iterator[tuple[Running, RpcMetrics, InFlight]]:
    state = HealthState()
    state.set("", SERVING)
    servicer = SyncHealthServicer(state)
    metrics, in_flight = RpcMetrics(), InFlight()
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=workers),
        interceptors=[SyncServerInterceptor(metrics, in_flight)],
    )
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield Running(state, servicer, port), metrics, in_flight
    finally:
        server.stop(None).wait(WAIT)


WATCH = ("grpc.health.v1.Health", "Watch", "server_stream")
CHECK = ("grpc.health.v1.Health", "Check", "unary")


def test_the_metrics_interceptor_keeps_watch_off_the_pool():
    with (
        serve_intercepted(workers=10) as (running, _, in_flight),
        grpc.insecure_channel(running.address) as channel,
    ):
        streams = [watch(channel, "") for _ in range(50)]
        for stream in streams:
            assert next(stream).status == SERVING
        assert check(channel, "") == SERVING  # 50 streams, 10 threads: none held
        assert in_flight.counts()[WATCH] == 50
        for stream in streams:
            stream.cancel()
        wait_until(lambda: in_flight.counts()[WATCH] == 0, what="the streams to end")


def test_the_metrics_interceptor_counts_rpcs_with_their_codes():
    with serve_intercepted() as (running, metrics, _):
        with grpc.insecure_channel(running.address) as channel:
            check(channel, "")
            with pytest.raises(grpc.RpcError):
                check(channel, "no.such.Service")
            stream = watch(channel, "")
            next(stream)
            running.state.end_watches()
            list(stream)
        wait_until(lambda: metrics.handled.get((WATCH, "OK")) == 1, what="the Watch to count")
    assert (metrics.handled[(CHECK, "OK")], metrics.handled[(CHECK, "NOT_FOUND")]) == (1, 1)


def test_more_clients_that_read_nothing_than_senders_hold_up_no_other_watcher():
    with serve() as running:
        stuck = [open_never_reading_watch(running.port, "") for _ in range(MAX_SENDERS + 4)]
        try:
            with grpc.insecure_channel(running.address) as channel:
                normal = watch(channel, "")
                assert next(normal).status == SERVING
                running.state.set("", NOT_SERVING)  # every stuck stream has a send to make
                assert next(normal).status == NOT_SERVING  # well before the 30 s cut
                normal.cancel()
            assert running.servicer.cut_streams > 0
        finally:
            for sock in stuck:
                sock.close()


def test_closing_the_servicer_ends_its_threads():
    before = threading.active_count()
    for _ in range(3):
        with serve() as running, grpc.insecure_channel(running.address) as channel:
            assert next(watch(channel, "")).status == SERVING
        running.servicer.close()
    wait_until(lambda: threading.active_count() <= before, what="the sender threads to end")
