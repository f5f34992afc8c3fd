"""Shared test helpers: servers on loopback, the CLI as a subprocess, bounded waits."""

from __future__ import annotations

import asyncio
import contextlib
import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Coroutine, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import grpc
import h2.config
import h2.connection
import h2.settings
from grpc_health.v1 import health_pb2, health_pb2_grpc

from petsage_grpc.config import Config
from petsage_grpc.server import Server
from petsage_grpc.values import format_address

T = TypeVar("T")
ROOT = Path(__file__).resolve().parent.parent
CLI = str(Path(sys.executable).parent / "petsage-grpc")
WAIT = 10.0
"""The bound of every wait in the tests, in seconds: far above what a healthy run needs."""


def wait_until(
    condition: Callable[[], bool], timeout: float = WAIT, what: str = "condition"
) -> None:
    """Poll `condition` until it holds; fail once `timeout` seconds pass."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.01)


def free_port() -> int:
    """A port free on 127.0.0.1 now (for a process that must be told its port up front)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def make_config(**overrides: Any) -> Config:
    # Every run_checks() runs the checks afresh, so that tests can step through thresholds.
    settings: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": 0,
        "grace_period": 5.0,
        "fresh_run_reuse": 0.0,
    }
    settings.update(overrides)
    return Config(**settings)


class ThreadedServer:
    """A real PetSage Server on 127.0.0.1, its event loop in a background thread."""

    def __init__(self, config: Config | None = None, **kwargs: Any) -> None:
        self.loop = asyncio.new_event_loop()
        self.server = Server(config or make_config(), **kwargs)
        self.state = self.server.state
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self) -> ThreadedServer:
        self._thread.start()
        self.run(self.server.start())
        return self

    def __exit__(self, *exc: object) -> None:
        self.run(self.server.drain_and_stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(WAIT)
        self.loop.close()

    @property
    def address(self) -> str:
        assert self.server.port is not None
        return format_address(self.server.config.host, self.server.port)

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = WAIT) -> T:
        """Run a coroutine on the server's loop and return its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)


def health_stub(channel: grpc.Channel) -> health_pb2_grpc.HealthStub:
    return health_pb2_grpc.HealthStub(channel)


def check(channel: grpc.Channel, service: str = "") -> int:
    response = health_stub(channel).Check(
        health_pb2.HealthCheckRequest(service=service), timeout=WAIT
    )
    return int(response.status)


def watch(channel: grpc.Channel, service: str = "", timeout: float = WAIT) -> Any:
    """Open a Watch stream; iterate it for statuses (each `next()` bounded by `timeout`)."""
    return health_stub(channel).Watch(
        health_pb2.HealthCheckRequest(service=service), timeout=timeout
    )


def statuses_until(stream: Iterator[Any], final: int) -> list[int]:
    """Read a Watch stream until `final` arrives; return every status seen."""
    seen: list[int] = []
    for response in stream:
        seen.append(int(response.status))
        if response.status == final:
            return seen
    raise AssertionError(f"stream ended before status {final}: saw {seen}")


class CLIProcess:
    """The petsage-grpc CLI (or another script) as a subprocess, its stderr read line by line."""

    def __init__(
        self,
        args: Sequence[str],
        env: dict[str, str] | None = None,
        merge_stdout: bool = False,
        cwd: Path | None = None,
    ) -> None:
        command = list(args) if args and args[0] == sys.executable else [CLI, *args]
        self.proc = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT if merge_stdout else subprocess.PIPE,
            text=True,
            env={**os.environ, **(env or {})},
            cwd=cwd or ROOT,
        )
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        stream = self.proc.stdout if self.proc.stderr is None else self.proc.stderr
        assert stream is not None
        for line in stream:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def wait_for_line(self, pattern: str, timeout: float = WAIT) -> re.Match[str]:
        """Wait for a stderr line matching `pattern`; fail on timeout or end of output."""
        regex = re.compile(pattern)
        for seen in self.lines:
            if match := regex.search(seen):
                return match
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            try:
                line = self._queue.get(timeout=max(remaining, 0.0))
            except queue.Empty:
                raise AssertionError(
                    f"no line matching {pattern!r} within {timeout}s; stderr: {self.lines}"
                ) from None
            if line is None:
                raise AssertionError(f"output ended without {pattern!r}; stderr: {self.lines}")
            self.lines.append(line)
            if match := regex.search(line):
                return match

    def read_available(self) -> list[str]:
        """Every line of output so far, without waiting for more."""
        while True:
            try:
                line = self._queue.get_nowait()
            except queue.Empty:
                return self.lines
            if line is None:
                return self.lines
            self.lines.append(line)

    def wait_for_port(self) -> int:
        return int(self.wait_for_line(r"serving on \S+:(\d+)(?: \(|$)").group(1))

    def send(self, signum: int = signal.SIGTERM) -> None:
        self.proc.send_signal(signum)

    def wait(self, timeout: float = WAIT) -> int:
        """Wait for exit; return the exit code, with all of stderr read into `lines`."""
        code = self.proc.wait(timeout)
        while (line := self._queue.get(timeout=timeout)) is not None:
            self.lines.append(line)
        return code

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(WAIT)


def run_cli(
    *args: str, env: dict[str, str] | None = None, prefix: Sequence[str] = ()
) -> subprocess.CompletedProcess[str]:
    """Run the CLI to completion (bounded) and capture its output; `prefix` runs it through
    another command (`with_hosts()`)."""
    return subprocess.run(
        [*prefix, CLI, *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=WAIT * 3,
        cwd=ROOT,
        check=False,
    )


def start_server(*args: str) -> CLIProcess:
    """`petsage-grpc serve` on 127.0.0.1, on a port the system picks, with `args` after."""
    return CLIProcess(["serve", "--host", "127.0.0.1", "--port", "0", *args])


def open_never_reading_watch(port: int, service: str) -> socket.socket:
    """A raw HTTP/2 client that opens Watch but grants the server no flow-control window, so the
    server can never send it a single message."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=WAIT)
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    conn.local_settings = h2.settings.Settings(
        client=True, initial_values={h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 0}
    )
    conn.initiate_connection()
    stream_id = conn.get_next_available_stream_id()
    conn.send_headers(
        stream_id,
        [
            (":method", "POST"),
            (":scheme", "http"),
            (":path", "/grpc.health.v1.Health/Watch"),
            (":authority", f"127.0.0.1:{port}"),
            ("content-type", "application/grpc"),
            ("te", "trailers"),
        ],
    )
    body = health_pb2.HealthCheckRequest(service=service).SerializeToString()
    conn.send_data(stream_id, b"\x00" + len(body).to_bytes(4, "big") + body, end_stream=True)
    sock.sendall(conn.data_to_send())
    return sock


class RawHTTP2:
    """A raw HTTP/2 client connection (h2), for what grpc clients never do: flooding pings,
    never granting flow-control window, waiting for the server's GOAWAY."""

    def __init__(self, port: int, host: str = "127.0.0.1") -> None:
        self.sock = socket.create_connection((host, port), timeout=WAIT)
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        self.conn.initiate_connection()
        self.flush()

    def flush(self) -> None:
        self.sock.sendall(self.conn.data_to_send())

    def start_calls(self, path: str, count: int) -> None:
        """Open `count` calls of `path`, each with its headers and never its request."""
        host, port = self.sock.getpeername()[:2]
        authority = format_address(host, port)
        for _ in range(count):
            stream = self.conn.get_next_available_stream_id()
            headers = [(":method", "POST"), (":scheme", "http"), (":path", path)]
            headers += [(":authority", authority), ("content-type", "application/grpc")]
            self.conn.send_headers(stream, [*headers, ("te", "trailers")])
        self.flush()

    def ping(self, count: int = 1) -> None:
        """Send `count` pings in one write."""
        for number in range(count):
            self.conn.ping(number.to_bytes(8, "big"))
        self.flush()

    def wait_for_goaway(self, timeout: float = WAIT) -> Any:
        """Read until the server sends GOAWAY (returned); fail on timeout or close without it.
        Frames are fed to h2 one at a time, since h2 refuses any frame after a GOAWAY."""
        import h2.events

        buffer = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.sock.settimeout(max(deadline - time.monotonic(), 0.01))
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                break
            if not data:
                raise AssertionError("the server closed the connection without GOAWAY")
            buffer += data
            while len(buffer) >= 9:
                size = 9 + int.from_bytes(buffer[:3], "big")
                if len(buffer) < size:
                    break
                frame, buffer = buffer[:size], buffer[size:]
                for event in self.conn.receive_data(frame):
                    if isinstance(event, h2.events.ConnectionTerminated):
                        return event
            with contextlib.suppress(OSError):  # the server may close right after GOAWAY
                self.flush()  # acknowledge settings and pings, as a live client does
        raise AssertionError(f"no GOAWAY within {timeout}s")

    def close(self) -> None:
        self.sock.close()


def process_footprint(pid: int) -> tuple[int, int]:
    """(open file descriptors, resident memory in KiB) of a process, from /proc."""
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    with open(f"/proc/{pid}/status") as status:
        rss = next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))
    return fds, rss


def with_hosts(hosts: dict[str, Sequence[str]], directory: Path) -> list[str]:
    """A command prefix under which names resolve as `hosts` says and in no other way, through
    the system's own resolver: a hosts file of its own and `hosts: files` in nsswitch.conf,
    bind-mounted in a user and mount namespace (the network stays the same, so loopback servers
    are reached as ever). Fails, saying why, where this system cannot make such a namespace."""
    hosts_file = directory / "hosts"
    hosts_file.write_text("".join(f"{a} {name}\n" for name, addrs in hosts.items() for a in addrs))
    nsswitch = directory / "nsswitch.conf"
    nsswitch.write_text("hosts: files\n")
    script = (
        'mount --bind "$1" /etc/hosts && mount --bind "$2" /etc/nsswitch.conf && shift 2 && '
        'exec "$@"'
    )
    prefix = ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", script, "sh"]
    prefix += [str(hosts_file), str(nsswitch)]
    assert shutil.which("unshare"), "unshare is missing: apt-get install util-linux"
    tried = subprocess.run([*prefix, "true"], capture_output=True, text=True, timeout=WAIT)
    assert tried.returncode == 0, f"no user and mount namespace here: {tried.stderr.strip()}"
    return prefix
