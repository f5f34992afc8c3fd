"""Bad input against a running server (TLS main port, plaintext health-only port): each gets the
right status or a closed connection, never a crash or a leak."""

from __future__ import annotations

import os
import socket
import ssl
import sys
from collections.abc import Iterator
from dataclasses import dataclass

import grpc
import pytest

from petsage_grpc.health import SERVING
from tests.certs import make_certs
from tests.helpers import (
    WAIT,
    CLIProcess,
    check,
    open_never_reading_watch,
    process_footprint,
    start_server,
    wait_until,
)

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


@dataclass
class Running:
    process: CLIProcess
    tls_port: int
    plain_port: int

    @property
    def plain(self) -> str:
        return f"127.0.0.1:{self.plain_port}"

    def answers(self) -> bool:
        with grpc.insecure_channel(self.plain) as channel:
            return check(channel, "") == SERVING


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    certs = make_certs(tmp_path_factory.mktemp("certs"))
    process = start_server(
        "--health-port",
        "0",
        "--health-port-max-watch-streams",  # the floods below go to the health port
        "5000",
        "--tls-cert",
        str(certs.server.cert),
        "--tls-key",
        str(certs.server.key),
    )
    try:
        tls_port = process.wait_for_port()
        plain_port = int(process.wait_for_line(r"health-only plaintext port on \S+:(\d+)").group(1))
        yield Running(process, tls_port, plain_port)
    finally:
        process.kill()


def closed_by_server(sock: socket.socket) -> bool:
    """Read until the server closes the connection; False if it keeps it open past WAIT."""
    sock.settimeout(WAIT)
    try:
        while sock.recv(65536):
            pass
    except (ConnectionResetError, BrokenPipeError):
        return True
    except TimeoutError:
        return False
    return True


def send_raw(port: int, data: bytes) -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as sock:
        sock.sendall(data)
        return closed_by_server(sock)


def call_raw(running: Running, method: str, body: bytes) -> grpc.StatusCode:
    with grpc.insecure_channel(running.plain) as channel:
        try:
            channel.unary_unary(method)(body, timeout=WAIT)
        except grpc.RpcError as error:
            return error.code()
    return grpc.StatusCode.OK


# --- each bad input ----------------------------------------------------------------------


def test_malformed_protobuf_is_internal_with_the_reason(running: Running) -> None:
    with grpc.insecure_channel(running.plain) as channel, pytest.raises(grpc.RpcError) as error:
        channel.unary_unary("/grpc.health.v1.Health/Check")(b"\x0a\xff\xff", timeout=WAIT)
    assert error.value.code() == grpc.StatusCode.INTERNAL
    assert error.value.details().startswith("malformed request: ")
    assert running.answers()


def test_10_mb_request_is_resource_exhausted(running: Running) -> None:
    body = b"\x0a\x80\x80\x80\x05" + b"a" * (10 * 1024 * 1024)
    assert call_raw(running, "/grpc.health.v1.Health/Check", body) == (
        grpc.StatusCode.RESOURCE_EXHAUSTED
    )
    assert running.answers()


def test_unknown_method_is_unimplemented(running: Running) -> None:
    assert call_raw(running, "/no.such.Service/Method", b"") == grpc.StatusCode.UNIMPLEMENTED
    assert call_raw(running, "/grpc.health.v1.Health/Nope", b"") == grpc.StatusCode.UNIMPLEMENTED
    assert running.answers()


def test_http1_request_is_closed(running: Running) -> None:
    assert send_raw(running.plain_port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    assert running.answers()


def test_random_bytes_are_closed(running: Running) -> None:
    assert send_raw(running.plain_port, garbage())
    assert send_raw(running.tls_port, garbage())
    assert running.answers()


def garbage() -> bytes:
    """4 KiB of random bytes that do not start like a TLS record. About 1 in 800 random
    buffers does (a second byte of 3, the protocol's major version), announcing a record longer
    than what was sent, and a TLS server rightly waits for the rest until its handshake
    timeout."""
    data = bytearray(os.urandom(4096))
    data[1] = 0
    return bytes(data)


def test_tls_handshake_to_the_plaintext_port_is_refused(running: Running) -> None:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with (
        socket.create_connection(("127.0.0.1", running.plain_port), timeout=WAIT) as sock,
        pytest.raises((ssl.SSLError, ConnectionResetError)),
    ):
        context.wrap_socket(sock).close()
    assert running.answers()


def test_plaintext_http2_to_the_tls_port_is_closed(running: Running) -> None:
    assert send_raw(running.tls_port, PREFACE + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00")
    with (
        grpc.insecure_channel(f"127.0.0.1:{running.tls_port}") as channel,
        pytest.raises(grpc.FutureTimeoutError),
    ):
        grpc.channel_ready_future(channel).result(timeout=1)
    assert running.answers()


def test_half_open_connections_do_not_stop_others(running: Running) -> None:
    held = []
    try:
        for port in (running.plain_port, running.tls_port):
            for _ in range(50):
                sock = socket.create_connection(("127.0.0.1", port), timeout=WAIT)
                sock.sendall(PREFACE[:10])  # then silence
                held.append(sock)
        assert running.answers()
    finally:
        for sock in held:
            sock.close()


def test_watch_clients_that_never_read_do_not_stop_others(running: Running) -> None:
    stuck = [open_never_reading_watch(running.plain_port, "") for _ in range(20)]
    try:
        assert running.answers()
    finally:
        for sock in stuck:
            sock.close()


# --- and afterwards ----------------------------------------------------------------------


def all_bad_input(running: Running) -> None:
    test_malformed_protobuf_is_internal_with_the_reason(running)
    test_10_mb_request_is_resource_exhausted(running)
    test_unknown_method_is_unimplemented(running)
    test_http1_request_is_closed(running)
    test_random_bytes_are_closed(running)
    test_tls_handshake_to_the_plaintext_port_is_refused(running)
    test_plaintext_http2_to_the_tls_port_is_closed(running)
    test_half_open_connections_do_not_stop_others(running)
    test_watch_clients_that_never_read_do_not_stop_others(running)


def flood(running: Running) -> None:
    process = CLIProcess(
        [sys.executable, "-m", "tests.apps.flood", running.plain, "100", "2000", "1"],
        merge_stdout=True,
    )
    try:
        process.wait_for_line("^flooding$", timeout=WAIT * 3)
        assert running.answers()
        assert process.wait(timeout=WAIT * 3) == 0
    finally:
        process.kill()


def test_repeated_bad_input_leaks_no_fds_or_memory(running: Running) -> None:
    pid = running.process.proc.pid
    all_bad_input(running)  # warm up: first-use allocations are not leaks
    flood(running)
    fds_before, rss_before = process_footprint(pid)
    for _ in range(3):
        all_bad_input(running)
        flood(running)

    def settled() -> bool:
        fds, rss = process_footprint(pid)
        return fds <= fds_before + 8 and rss <= rss_before + 64 * 1024

    wait_until(settled, timeout=WAIT * 3, what=f"the footprint to settle: {process_footprint(pid)}")
    assert running.answers()


def test_nothing_above_left_a_traceback_or_an_error(running: Running) -> None:
    lines = running.process.read_available()
    assert [line for line in lines if "Traceback" in line or " ERROR " in line] == []
