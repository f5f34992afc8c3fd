"""The admin HTTP port against clients that hold connections (silent sockets, trickled headers,
slow readers) and requests framed two ways at once. Every client is a real socket on loopback."""

from __future__ import annotations

import asyncio
import fcntl
import json
import re
import signal
import socket
import termios
import threading
import time
import urllib.request
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import pytest

from petsage_grpc.admin import MAX_CONNECTIONS, AdminApp, AdminServer
from petsage_grpc.health import HealthState
from petsage_grpc.monitor import HealthMonitor
from tests.helpers import WAIT, ThreadedServer, make_config, start_server, wait_until

T = TypeVar("T")


class RunningAdmin:
    """An AdminServer alone on 127.0.0.1 with its own settings, its loop in a thread."""

    def __init__(self, metrics: Callable[[], tuple[bytes, str]] | None = None, **settings) -> None:
        self.loop = asyncio.new_event_loop()
        self.monitor = HealthMonitor(HealthState())
        app = AdminApp(self.monitor, metrics or (lambda: (b"# no metrics\n", "text/plain")))
        self.server = AdminServer(app, **settings)
        self.port = 0
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self) -> RunningAdmin:
        self._thread.start()
        self.run(self._start())
        return self

    async def _start(self) -> None:
        self.monitor.start()
        self.port = await self.server.start("127.0.0.1", 0)

    def __exit__(self, *exc: object) -> None:
        self.run(self.server.stop())
        self.run(self.monitor.close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(WAIT)
        self.loop.close()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(WAIT)

    @property
    def connections(self) -> int:
        async def count() -> int:
            return self.server.connection_count

        return self.run(count())


def connect(port: int, receive_buffer: int | None = None) -> socket.socket:
    sock = socket.socket()
    if receive_buffer is not None:  # before connecting, so that the window is small from the start
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    sock.settimeout(WAIT)
    sock.connect(("127.0.0.1", port))
    return sock


def silent_sockets(port: int, count: int) -> list[socket.socket]:
    """`count` connections that send nothing, each accepted by the server."""
    return [connect(port) for _ in range(count)]


def read_until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (bounded by WAIT)."""
    received = b""
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        sock.settimeout(max(deadline - time.monotonic(), 0.01))
        try:
            data = sock.recv(65536)
        except ConnectionResetError:
            return received
        if not data:
            return received
        received += data
    raise AssertionError(f"the connection is still open after {WAIT}s; received {received[:200]!r}")


def read_response(sock: socket.socket) -> bytes:
    """One whole response (head and Content-Length body), leaving the connection open."""
    received = b""
    while True:
        head, _, body = received.partition(b"\r\n\r\n")
        length = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
        if length and len(body) >= int(length.group(1)):
            return received
        data = sock.recv(65536)
        assert data, f"closed after {received!r}"
        received += data


def readyz(port: int) -> tuple[int, Any]:
    """GET /readyz as the kubelet sends it: a new connection, HTTP/1.1, Connection: close."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/readyz", headers={"Connection": "close"}
    )
    with urllib.request.urlopen(request, timeout=WAIT) as response:
        return response.status, json.loads(response.read())


def close_all(sockets: list[socket.socket]) -> None:
    for sock in sockets:
        sock.close()


# --- connections that send nothing -----------------------------------------------------------


def test_readyz_is_answered_while_the_connection_cap_is_full_of_silent_sockets():
    with ThreadedServer(make_config(admin_port=0)) as server:
        port = server.server.admin_port
        assert port is not None
        held = silent_sockets(port, MAX_CONNECTIONS + 6)
        try:
            assert readyz(port) == (200, {"status": "SERVING"})
            assert readyz(port) == (200, {"status": "SERVING"})
        finally:
            close_all(held)


def test_silent_sockets_are_closed_after_the_header_deadline():
    with RunningAdmin(header_timeout=0.3) as admin:
        held = silent_sockets(admin.port, 5)
        try:
            assert [read_until_closed(sock) for sock in held] == [b""] * 5
            wait_until(lambda: admin.connections == 0, what="the server to forget them")
        finally:
            close_all(held)


def test_a_request_line_trickled_past_the_header_deadline_is_cut_off():
    with RunningAdmin(header_timeout=0.3) as admin, connect(admin.port) as sock:
        sock.sendall(b"GET /readyz HTTP/1.1\r\n")  # and the headers never end
        assert read_until_closed(sock) == b""


def test_at_the_cap_an_idle_keep_alive_connection_is_closed_before_an_older_silent_one():
    with RunningAdmin(max_connections=2) as admin, connect(admin.port) as silent:
        wait_until(lambda: admin.connections == 1, what="the silent connection accepted")
        with connect(admin.port) as keep_alive:
            keep_alive.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            assert read_response(keep_alive).startswith(b"HTTP/1.1 200")  # idle, kept alive
            assert readyz(admin.port) == (200, {"status": "SERVING"})
            assert read_until_closed(keep_alive) == b""
        silent.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert read_until_closed(silent).startswith(b"HTTP/1.1 200")


def test_at_the_cap_the_connection_silent_longest_is_closed_first():
    with RunningAdmin(max_connections=3) as admin:
        held = []
        for _ in range(3):
            held.append(connect(admin.port))
            wait_until(lambda: admin.connections == len(held), what="the connection accepted")
        try:
            assert readyz(admin.port) == (200, {"status": "SERVING"})
            assert read_until_closed(held[0]) == b""  # the oldest made room
            held[1].sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            assert read_until_closed(held[1]).startswith(b"HTTP/1.1 200")
        finally:
            close_all(held)


# --- a client that sends requests and never reads the answers ----------------------------------

METRICS_BODY = b"# " + b"x" * 8190 + b"\n"  # 8 KiB, a /metrics of a few dozen checks


def pipelined(count: int, path: str = "/metrics") -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode() * count


def unread_bytes(sock: socket.socket) -> int:
    """Bytes waiting in the socket's receive buffer."""
    return int.from_bytes(fcntl.ioctl(sock, termios.FIONREAD, b"\0\0\0\0"), "little")


def test_a_slow_reader_is_closed_after_the_write_deadline_with_bounded_output_queued():
    produced = 0

    def metrics() -> tuple[bytes, str]:
        nonlocal produced
        produced += 1
        return METRICS_BODY, "text/plain"

    with (
        RunningAdmin(metrics, write_timeout=0.5) as admin,
        connect(admin.port, receive_buffer=4096) as sock,
    ):
        sock.sendall(pipelined(1500))
        wait_until(lambda: produced > 0, what="the first response")
        wait_until(lambda: admin.connections == 0, what="the slow reader to be closed")
        # What the server took on for this client, beyond what the client's small window holds.
        queued = produced * len(METRICS_BODY)
        assert 0 < queued <= 512 * 1024, f"{produced} responses queued"


def test_stop_with_a_slow_reader_attached_is_clean(processes):
    process = start_server("--admin-port", "0")
    processes.append(process)
    port = int(process.wait_for_line(r"admin HTTP port on \S+:(\d+)").group(1))
    with connect(port, receive_buffer=4096) as sock:
        sock.sendall(pipelined(1500))
        # The server is stuck once this client's window is full and stays so.
        sizes = [0]

        def stuck() -> bool:
            sizes.append(unread_bytes(sock))
            time.sleep(0.1)
            return sizes[-1] > 0 and sizes[-1] == sizes[-2]

        wait_until(stuck, what="the server to stop sending")
        process.send(signal.SIGTERM)
        assert process.wait() == 0
    log = "\n".join(process.lines)
    assert "Traceback" not in log
    assert "CancelledError" not in log
    assert re.search(r"stopped$", process.lines[-1]), process.lines[-1]


# --- requests framed two ways ------------------------------------------------------------------


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_content_length_with_transfer_encoding_is_400_and_closes(method):
    with RunningAdmin() as admin, connect(admin.port) as sock:
        sock.sendall(
            f"{method} /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
            "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n".encode()
            + pipelined(1, "/readyz")  # smuggled, if the connection were kept
        )
        answer = read_until_closed(sock)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 ")
    assert b"\r\nconnection: close" in head.lower()
    assert json.loads(body) == {"error": "bad request"}
    assert answer.count(b"HTTP/1.1") == 1


def test_port_keeps_serving_after_a_request_framed_two_ways():
    with RunningAdmin() as admin, connect(admin.port) as sock:
        sock.sendall(
            b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
        )
        read_until_closed(sock)
        assert readyz(admin.port) == (200, {"status": "SERVING"})


# --- an endpoint that fails --------------------------------------------------------------------


def test_an_endpoint_that_raises_is_500_with_one_log_line(caplog):
    def broken() -> tuple[bytes, str]:
        raise RuntimeError("no registry")

    with RunningAdmin(broken) as admin, connect(admin.port) as sock:
        sock.sendall(
            pipelined(1, "/metrics")
            + b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        answer = read_until_closed(sock)
    first, _, second = answer.partition(b"HTTP/1.1 200 ")  # the connection is still served
    assert first.startswith(b"HTTP/1.1 500 ")
    assert first.endswith(b'{"error": "internal error"}')
    assert second
    errors = [r.getMessage() for r in caplog.records if r.name == "petsage_grpc.admin"]
    assert errors == ["admin port: GET /metrics failed: RuntimeError: no registry"]
    assert "Traceback" not in caplog.text
