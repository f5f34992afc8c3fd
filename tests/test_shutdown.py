"""What SIGTERM and SIGINT do to a running server, its Watch streams and RPCs in flight."""

from __future__ import annotations

import asyncio
import signal
import socket
import sys
import threading
from typing import Any

import grpc
import pytest

from petsage_grpc.health import NOT_SERVING, SERVING
from petsage_grpc.server import BindError, Server
from tests.helpers import (
    WAIT,
    CLIProcess,
    check,
    free_port,
    make_config,
    open_never_reading_watch,
    start_server,
    wait_until,
    watch,
)


def new_check_code(port: int) -> grpc.StatusCode:
    """The status code of a Check on a new connection."""
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        try:
            check(channel, "")
        except grpc.RpcError as error:
            return error.code()
    return grpc.StatusCode.OK


def start(processes, *args: str) -> tuple[CLIProcess, int]:
    process = start_server(*args)
    processes.append(process)
    return process, process.wait_for_port()


def start_slow(processes, grace: float, drain: float = 0.0) -> tuple[CLIProcess, int]:
    process = CLIProcess([sys.executable, "-m", "tests.apps.slow_server", str(grace), str(drain)])
    processes.append(process)
    return process, process.wait_for_port()


def stop_during_a_sleep(process: CLIProcess, channel: grpc.Channel, seconds: int) -> Any:
    """Start a Slow/Sleep RPC of `seconds`; once it is in flight, SIGTERM the server and wait
    until it refuses new RPCs. Returns the RPC's future."""
    sleep = channel.unary_unary("/petsage.test.Slow/Sleep")
    future = sleep.future(str(seconds).encode(), timeout=WAIT * 2)
    process.wait_for_line("sleep started")
    process.send(signal.SIGTERM)
    process.wait_for_line("stopping: new RPCs refused")
    return future


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_sends_not_serving_to_open_watch_then_ends_it_ok(processes, signum):
    process, port = start(processes, "--grace-period", "30")
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stream = watch(channel, "")
        assert next(stream).status == SERVING
        process.send(signum)
        assert [r.status for r in stream] == [NOT_SERVING]
        assert stream.code() == grpc.StatusCode.OK
    assert process.wait() == 0


def test_idle_server_with_open_watch_exits_without_waiting_out_the_grace_period(processes):
    process, port = start(processes, "--grace-period", "300")
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        streams = [watch(channel, "") for _ in range(5)]
        for stream in streams:
            assert next(stream).status == SERVING
        process.send(signal.SIGTERM)
        assert process.wait(timeout=WAIT) == 0  # far inside the 300 s grace period


def test_drain_delay_keeps_answering_not_serving_before_stopping(processes):
    process, port = start(processes, "--drain-delay", "60s")
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        process.send(signal.SIGTERM)
        process.wait_for_line("draining")
        assert check(channel, "") == NOT_SERVING
        assert check(channel, "petsage.v1.SmokeService") == NOT_SERVING
    process.send(signal.SIGTERM)  # a second signal skips the rest of the drain
    assert process.wait() == 1
    assert any("stopping at once" in line for line in process.lines)


def test_rpc_in_flight_completes_within_the_grace_period(processes):
    process, port = start_slow(processes, grace=30)
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        future = stop_during_a_sleep(process, channel, 5)
        wait_until(lambda: new_check_code(port) == grpc.StatusCode.UNAVAILABLE, what="refusal")
        assert not future.done()
        assert future.result(timeout=WAIT * 2) == b"slept"
    assert process.wait() == 0


def test_second_signal_forces_the_stop(processes):
    process, port = start_slow(processes, grace=300)
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        future = stop_during_a_sleep(process, channel, 300)
        process.send(signal.SIGTERM)
        assert process.wait() == 1
        with pytest.raises(grpc.RpcError) as cut:
            future.result(timeout=WAIT)
        assert cut.value.code() in (grpc.StatusCode.CANCELLED, grpc.StatusCode.UNAVAILABLE)


def test_watch_opened_during_the_drain_gets_not_serving_then_ends_ok(processes):
    process, port = start(processes, "--drain-delay", "2")
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        process.send(signal.SIGTERM)
        process.wait_for_line("draining")
        stream = watch(channel, "")
        assert [r.status for r in stream] == [NOT_SERVING]
        assert stream.code() == grpc.StatusCode.OK
    assert process.wait() == 0


def test_stop_signal_during_start_up_is_acted_on_once_serving(processes):
    check = "name=slow,kind=python,target=tests.apps.slow_import:check"
    process = start_server("--check", check)
    processes.append(process)
    process.wait_for_line("importing a slow module")  # before the server handles signals
    process.send(signal.SIGTERM)
    assert process.wait() == 0
    assert any("received SIGTERM" in line for line in process.lines)
    assert any(line.endswith("stopped") for line in process.lines)


def test_watch_client_that_never_reads_does_not_hold_up_the_stop(processes):
    process, port = start(processes, "--grace-period", "300")
    stuck = open_never_reading_watch(port, "")
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stream = watch(channel, "")
            assert next(stream).status == SERVING
            process.send(signal.SIGTERM)
            assert [r.status for r in stream] == [NOT_SERVING]
        assert process.wait(timeout=WAIT) == 0  # far inside the 300 s grace period
    finally:
        stuck.close()
    assert any("Watch streams whose clients read nothing" in line for line in process.lines)


def test_stuck_watch_does_not_cut_an_rpc_in_flight(processes):
    process, port = start_slow(processes, grace=300)
    stuck = open_never_reading_watch(port, "")
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            future = channel.unary_unary("/petsage.test.Slow/Sleep").future(b"3", timeout=WAIT)
            process.wait_for_line("sleep started")
            process.send(signal.SIGTERM)
            assert future.result(timeout=WAIT) == b"slept"
        assert process.wait(timeout=WAIT) == 0
    finally:
        stuck.close()


@pytest.mark.parametrize("taken", ["admin_port", "health_port"])
def test_a_failed_start_leaves_nothing_running(taken):
    """An embedding application whose admin or health port is taken: start() raises, and the
    ports it bound are free. The checks, once started (they start after the gRPC ports bind),
    stop with it, and the state with them, as a stop would leave them; else the state (perhaps
    the application's own) is left as it was."""

    async def start_on_a_busy_port() -> tuple[list[asyncio.Task[Any]], Server]:
        with socket.socket() as busy:
            busy.bind(("127.0.0.1", 0))
            busy.listen()
            ports = {"health_port": 0, taken: busy.getsockname()[1]}
            server = Server(make_config(**ports))
            with pytest.raises(BindError):
                await server.start()
        left = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
        return left, server

    left, server = asyncio.run(start_on_a_busy_port())
    assert left == []
    assert server.state.is_shutdown == (taken == "admin_port")
    bound = [server.port] if taken == "health_port" else [server.port, server.health_port]
    for port in bound:
        assert port is not None
        with socket.socket() as again:
            again.bind(("127.0.0.1", port))  # not held by a server that never served


def test_a_failed_start_serves_no_call_that_reached_its_port():
    """The undo starts a listener that never started, to free its port: a call that reached
    the port meanwhile is refused, never handled (the application's handler has side effects)."""
    handled: list[bytes] = []

    def effect(request: bytes, context: grpc.ServicerContext) -> bytes:
        handled.append(request)
        return b""

    service = grpc.method_handlers_generic_handler(
        "test.Side", {"Effect": grpc.unary_unary_rpc_method_handler(effect)}
    )
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        for _ in range(10):
            port = free_port()
            calls = RawHTTP2Calls(port)
            calls.start()
            server = Server(
                make_config(port=port, health_port=busy.getsockname()[1]), services=[service]
            )
            with pytest.raises(BindError):
                asyncio.run(server.start())
            calls.stop()
            assert calls.sent  # some calls did reach the port while it was bound
    assert handled == []


class RawHTTP2Calls(threading.Thread):
    """Connects to `port` again and again and sends a whole call of test.Side/Effect, until
    stopped (at most 500 connections)."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.sent = 0
        self._finish = threading.Event()

    def run(self) -> None:
        import h2.config
        import h2.connection

        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        conn.initiate_connection()
        headers = [(":method", "POST"), (":scheme", "http"), (":path", "/test.Side/Effect")]
        headers += [(":authority", f"127.0.0.1:{self.port}"), ("content-type", "application/grpc")]
        conn.send_headers(1, [*headers, ("te", "trailers")])
        conn.send_data(1, b"\x00\x00\x00\x00\x00", end_stream=True)
        call = conn.data_to_send()
        sockets: list[socket.socket] = []
        while not self._finish.is_set() and len(sockets) < 500:
            sock = socket.socket()
            try:
                sock.connect(("127.0.0.1", self.port))
                sock.sendall(call)
            except OSError:
                sock.close()
                continue
            self.sent += 1
            sockets.append(sock)
        for sock in sockets:
            sock.close()

    def stop(self) -> None:
        self._finish.set()
        self.join(WAIT)
