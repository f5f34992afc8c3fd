"""SmokeTest on every replica, not one at random: `petsage_grpc.client.smoke_each()` against real
servers on 127.0.0.1, 127.0.0.2 and 127.0.0.3 (one port for all three where the system lets
them share it, as the pods behind a headless Service do)."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from concurrent import futures
from contextlib import ExitStack
from pathlib import Path

import grpc
import pytest
from cryptography.x509.oid import ExtendedKeyUsageOID

from petsage_grpc import __version__
from petsage_grpc.checks.spec import CheckSpec
from petsage_grpc.client import Endpoint, resolve, smoke_each
from tests.certs import SERVER_NAME, make_certs
from tests.helpers import (
    CLI,
    WAIT,
    ThreadedServer,
    free_port,
    make_config,
    run_cli,
    with_hosts,
)

HOSTS = ("127.0.0.1", "127.0.0.2", "127.0.0.3")


def can_bind(host: str) -> bool:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        try:
            probe.bind((host, 0))
        except OSError:
            return False
    return True


class Fleet:
    """Three replicas: on HOSTS and one port, or where 127.0.0.2 cannot be bound, on 127.0.0.1 and
    a port each. Their addresses are known before they start; each is started, stopped and
    looked at by its index, and named `petsage-<index>` (its POD_NAME)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self._monkeypatch = monkeypatch
        self._stacks: dict[int, ExitStack] = {}
        self.servers: dict[int, ThreadedServer] = {}
        assert can_bind(HOSTS[1]), f"{HOSTS[1]} cannot be bound (Linux binds all of 127/8)"
        port = free_port()
        self.places = [(host, port) for host in HOSTS]

    def start(self, index: int, version: str = "1.4.0", **config: object) -> ThreadedServer:
        self._monkeypatch.setenv("POD_NAME", f"petsage-{index}")
        host, port = self.places[index]
        stack = ExitStack()
        server = stack.enter_context(
            ThreadedServer(make_config(host=host, port=port, **config), version=version)
        )
        self._stacks[index], self.servers[index] = stack, server
        return server

    def address(self, index: int) -> str:
        host, port = self.places[index]
        return f"{host}:{port}"

    @property
    def target(self) -> str:
        """Every replica, as grpc spells a list of IPv4 addresses."""
        return "ipv4:" + ",".join(self.address(index) for index in range(len(HOSTS)))

    def stop(self, index: int) -> None:
        self.servers.pop(index)
        self._stacks.pop(index).close()

    def close(self) -> None:
        for index in list(self.servers):
            self.stop(index)


@pytest.fixture
def fleet(monkeypatch: pytest.MonkeyPatch) -> Iterator[Fleet]:
    replicas = Fleet(monkeypatch)
    yield replicas
    replicas.close()


# --- the Python function ------------------------------------------------------------------------


def test_every_replica_answers_by_name_and_version(fleet):
    for index in range(3):
        fleet.start(index, version="1.3.0" if index == 1 else "1.4.0")
    results = smoke_each(fleet.target)
    assert [r.address for r in results] == [fleet.address(i) for i in range(3)]
    assert [r.instance for r in results] == ["petsage-0", "petsage-1", "petsage-2"]
    assert [r.status for r in results] == ["OK", "OK", "OK"]
    assert [r.ok(version="1.4.0") for r in results] == [True, False, True]
    assert all(r.uptime is not None and r.uptime > 0 for r in results)


def test_a_replica_that_fails_or_is_gone_is_a_result_not_an_exception(fleet, tmp_path: Path):
    drain = tmp_path / "cache-down"
    drain.touch()
    cache = CheckSpec(name="cache", kind="file", target=str(drain), required=False)
    fleet.start(0, checks=(cache,))
    fleet.start(1).server.monitor.enter_maintenance()
    fleet.start(2)
    fleet.servers[0].run(fleet.servers[0].server.monitor.run_checks(timeout=5))
    fleet.stop(2)
    degraded, failing, gone = smoke_each(fleet.target, connect_timeout=0.3)
    assert (degraded.status, degraded.failing_checks) == (
        "DEGRADED",
        [("cache", "the file exists")],
    )
    assert failing.status == "FAILING"
    assert failing.response is not None and "maintenance" in failing.response.message
    assert (gone.status, gone.error) == ("UNREACHABLE", "failed to connect within 0.3s")
    assert gone.instance == gone.version == "" and gone.uptime is None


def test_a_server_without_smoke_service_is_an_error():
    server = grpc.server(futures.ThreadPoolExecutor(1))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        [result] = smoke_each(f"127.0.0.1:{port}")
    finally:
        server.stop(None)
    assert (result.status, result.error) == ("ERROR", "does not implement petsage.v1.SmokeService")


@pytest.mark.parametrize(
    ("target", "addresses"),
    [
        ("ipv4:127.0.0.2:5,127.0.0.1:5", ["127.0.0.1:5", "127.0.0.2:5"]),
        ("ipv6:[::1]:5", ["[::1]:5"]),
        ("ipv4:127.0.0.1", ["127.0.0.1:443"]),  # grpc's default port
        ("127.0.0.1:5, [::1]:5,127.0.0.1:5", ["127.0.0.1:5", "[::1]:5"]),  # each once
        (["127.0.0.3:7", "127.0.0.2:7"], ["127.0.0.2:7", "127.0.0.3:7"]),
    ],
)
def test_targets_as_grpc_spells_them(target, addresses):
    assert [endpoint.address for endpoint in resolve(target)] == addresses


def test_a_name_is_its_endpoints_authority():
    assert Endpoint("127.0.0.1:5", "localhost:5") in resolve("dns:///localhost:5")
    assert Endpoint("127.0.0.1:5", "localhost:5") in resolve(":5")  # as the other commands


@pytest.mark.parametrize(
    ("target", "problem"),
    [
        ("dns://10.0.0.2/petsage:50051", "a DNS server of its own is not supported"),
        ("unix:/run/petsage.sock", "cannot list the endpoints"),
        ("xds:///petsage", "cannot list the endpoints"),
        ("ipv4:localhost:50051", "'localhost' is not an IPv4 address"),
        ("ipv6:127.0.0.1:50051", "is not an IPv6 address"),
        ("petsage:http", "invalid port"),
        ("petsage:0", "invalid port"),
        ("", "invalid address"),
        ("[::1:50051", "invalid address"),
    ],
)
def test_targets_it_cannot_list_are_refused(target, problem):
    with pytest.raises(ValueError, match=problem):
        resolve(target)


# --- petsage-grpc smoke -each ------------------------------------------------------------------

FAST = ("-connect-timeout", "300ms", "-rpc-timeout", "5s")


def each(*args: str, prefix: Sequence[str] = ()) -> tuple[int, list[str], str]:
    """`smoke -each ...`: (exit code, stdout lines, stderr)."""
    result = run_cli("smoke", "-each", *FAST, *args, prefix=prefix)
    return result.returncode, result.stdout.splitlines(), result.stderr


def row(lines: list[str], address: str) -> list[str]:
    """The cells of an endpoint's row (DETAIL as one cell)."""
    return next(line for line in lines if line.startswith(address + " ")).split(None, 5)


def test_expect_version_fails_naming_the_replica_on_another_version(fleet):
    for index in range(3):
        fleet.start(index, version="1.3.0" if index == 2 else "1.4.0")
    code, lines, _ = each("-addr", fleet.target, "-expect-version", "1.4.0")
    assert code == 6
    assert lines[0].split() == ["ENDPOINT", "INSTANCE", "VERSION", "STATUS", "UPTIME", "DETAIL"]
    assert row(lines, fleet.address(0))[1:4] == ["petsage-0", "1.4.0", "OK"]
    odd = row(lines, fleet.address(2))
    assert odd[1:4] == ["petsage-2", "1.3.0", "OK"]
    assert odd[5] == "expected version 1.4.0"
    assert lines[-1] == "2/3 endpoints OK on 1.4.0, 1 on 1.3.0"

    code, lines, _ = each("-addr", fleet.target, "-expect-own-version")  # this client's version
    assert code == 6
    assert lines[-1] == f"0/3 endpoints OK on {__version__}, 1 on 1.3.0, 2 on 1.4.0"


def test_failing_degraded_and_stopped_replicas_are_reported(fleet, tmp_path: Path):
    down = tmp_path / "cache-down"
    down.touch()
    cache = CheckSpec(name="cache", kind="file", target=str(down), required=False)
    fleet.start(0, checks=(cache,))
    fleet.start(1).server.monitor.enter_maintenance()
    fleet.start(2)
    fleet.stop(2)
    code, lines, stderr = each("-addr", fleet.target, "-deep")
    assert (code, stderr) == (2, "")  # unreachable is the worst of the three
    degraded = row(lines, fleet.address(0))
    assert (degraded[3], degraded[5]) == ("DEGRADED", "cache: the file exists")
    assert row(lines, fleet.address(1))[5] == "PetSage is not ready: in maintenance"
    assert row(lines, fleet.address(2))[1:] == [
        "-", "-", "UNREACHABLE", "-", "failed to connect within 0.3s"
    ]  # fmt: skip
    assert lines[-1] == "0/3 endpoints OK, 1 DEGRADED, 1 FAILING, 1 unreachable"

    code, lines, _ = each("-addr", fleet.target, "-json")
    body = json.loads("\n".join(lines))
    assert code == body["exitCode"] == 2
    assert [e["status"] for e in body["endpoints"]] == ["DEGRADED", "FAILING", "UNREACHABLE"]
    assert body["endpoints"][0]["failingChecks"] == [{"name": "cache", "error": "the file exists"}]
    assert body["endpoints"][0]["instance"] == "petsage-0"
    assert body["endpoints"][2]["error"] == "failed to connect within 0.3s"
    assert body["summary"] == "0/3 endpoints OK, 1 DEGRADED, 1 FAILING, 1 unreachable"


def test_the_most_serious_problem_decides_the_exit_code(fleet, tmp_path: Path):
    down = tmp_path / "cache-down"
    down.touch()
    cache = CheckSpec(name="cache", kind="file", target=str(down), required=False)
    fleet.start(0, checks=(cache,))
    fleet.start(1, version="1.3.0")
    fleet.start(2)
    target = fleet.target
    assert each("-addr", target)[0] == 5  # DEGRADED
    assert each("-addr", target, "-expect-version", "1.4.0")[0] == 6  # another version
    fleet.servers[2].server.monitor.enter_maintenance()
    assert each("-addr", target, "-expect-version", "1.4.0")[0] == 4  # FAILING
    fleet.stop(2)
    assert each("-addr", target, "-expect-version", "1.4.0")[0] == 2  # unreachable


def test_fewer_endpoints_than_wanted_fail(fleet):
    fleet.start(0)
    code, lines, _ = each("-addr", fleet.address(0), "-min-endpoints", "2")
    assert code == 7
    assert lines[-1] == "1/1 endpoints OK on 1.4.0; want at least 2"


class Terminal:
    """A pseudo-terminal for a process's stderr, read as the process writes it."""

    def __init__(self) -> None:
        self.leader, self.follower = pty.openpty()
        self.shown = ""

    def read_until(self, text: str, timeout: float = WAIT) -> None:
        """Read until `text` has been shown (or, with text "", until the process closes it)."""
        deadline = time.monotonic() + timeout
        while not text or text not in self.shown:
            ready, _, _ = select.select([self.leader], [], [], max(deadline - time.monotonic(), 0))
            if not ready:
                raise AssertionError(f"{text!r} not shown within {timeout}s: {self.shown!r}")
            try:
                chunk = os.read(self.leader, 4096)
            except OSError:  # EIO: every end of the terminal is closed
                chunk = b""
            if not chunk:
                if text:
                    raise AssertionError(f"{text!r} never shown: {self.shown!r}")
                return
            self.shown += chunk.decode()

    def close(self) -> None:
        os.close(self.leader)


def test_wait_succeeds_once_a_late_replica_comes_up_updating_one_line(fleet):
    fleet.start(0)
    fleet.start(1)
    terminal = Terminal()
    process = subprocess.Popen(
        [CLI, "smoke", "-each", "-addr", fleet.target, "-expect-version", "1.4.0",
         "-wait", "20s", "-connect-timeout", "200ms"],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=terminal.follower, text=True,
    )  # fmt: skip
    os.close(terminal.follower)
    try:
        terminal.read_until("2/3 endpoints OK on 1.4.0, 1 unreachable")
        fleet.start(2)
        stdout, _ = process.communicate(timeout=WAIT)
        terminal.read_until("")
    finally:
        process.kill()
        process.wait(WAIT)
        terminal.close()
    assert process.returncode == 0
    lines = stdout.splitlines()
    assert [row(lines, fleet.address(i))[3] for i in range(3)] == ["OK", "OK", "OK"]
    assert lines[-1] == "3/3 endpoints OK on 1.4.0"
    # One line, rewritten in place ("\r", erase to its end) each round, and erased at the end.
    assert re.fullmatch(
        r"(\r\x1b\[K\[\d+s of 20s\] 2/3 endpoints OK on 1\.4\.0, 1 unreachable)+\r\x1b\[K",
        terminal.shown,
    )


def test_wait_ends_with_the_last_verdict_in_plain_lines_off_a_terminal(fleet):
    fleet.start(0)
    fleet.start(1)
    code, lines, stderr = each("-addr", fleet.target, "-wait", "1s")
    assert code == 2
    assert lines[-1] == "2/3 endpoints OK on 1.4.0, 1 unreachable"
    for line in stderr.splitlines():  # a line for each change (none if a round took 1s)
        assert re.fullmatch(r"\[\d+s of 1s\] 2/3 endpoints OK on 1\.4\.0, 1 unreachable", line)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("-addr", "x:1", "-wait", "5s"), "error: specified -wait without specifying -each"),
        (("-addr", "x:1", "-expect-version", "1"), "specified -expect-version without"),
        (("-each", "-addr", "x:1", "-expect-version", ""), "error: -expect-version is empty"),
        (("-addr", "x:1", "-expect-own-version"), "specified -expect-own-version without"),
        (
            ("-each", "-addr", "x:1", "-expect-own-version", "-expect-version", "1"),
            "cannot specify both -expect-version and -expect-own-version",
        ),
        (("-each", "-addr", "x:1", "-min-endpoints", "0"), "invalid count '0'"),
        (("-each", "-addr", "x:1", "-concurrency", "many"), "invalid count 'many'"),
        (("-each", "-addr", "unix:/run/p.sock"), "cannot list the endpoints of this target"),
        (("-each", "-addr", "dns://10.0.0.2/p:1"), "a DNS server of its own is not supported"),
    ],
)
def test_bad_each_flags_are_exit_1_with_one_line(args, message):
    result = run_cli("smoke", *args)
    assert result.returncode == 1
    assert len(result.stderr.splitlines()) == 1 and message in result.stderr
    assert result.stdout == ""


def test_tls_verifies_the_name_an_endpoint_was_resolved_from(tmp_path: Path):
    certs = make_certs(tmp_path)  # for server.petsage.test and 127.0.0.1
    local = certs.authority.issue("localhost", ExtendedKeyUsageOID.SERVER_AUTH, "local")
    ca = ("-tls", "-tls-ca-cert", str(certs.ca))
    with (
        ThreadedServer(make_config(tls_cert=str(certs.server.cert), tls_key=str(certs.server.key)))
        as other,
        ThreadedServer(make_config(tls_cert=str(local.cert), tls_key=str(local.key))) as named,
    ):  # fmt: skip
        target = f"localhost:{other.server.port},localhost:{named.server.port}"
        code, lines, _ = each("-addr", target, *ca)
        # Each is checked against the name, localhost, though both hold the address 127.0.0.1.
        assert code == 2
        assert row(lines, other.address)[3] == "UNREACHABLE"
        assert row(lines, named.address)[3] == "OK"
        assert each("-addr", other.address, *ca, "-tls-server-name", SERVER_NAME)[0] == 0
        assert each("-addr", target, "-tls", "-tls-no-verify")[0] == 0


# --- names: every address of a name, through the system's resolver ----------------------------


def resolving(tmp_path: Path, hosts: dict[str, Sequence[str]]) -> list[str]:
    return with_hosts(hosts, tmp_path)


def test_a_headless_service_name_is_every_replica(fleet, tmp_path: Path):
    prefix = resolving(tmp_path, {"petsage-grpc-headless": HOSTS})
    for index in range(3):
        fleet.start(index)
    port = fleet.places[0][1]
    code, lines, _ = each("-addr", f"dns:///petsage-grpc-headless:{port}", prefix=prefix)
    assert code == 0
    assert [line.split()[0] for line in lines[1:-1]] == [fleet.address(i) for i in range(3)]
    assert lines[-1] == "3/3 endpoints OK on 1.4.0"


def test_a_name_without_addresses_is_too_few_endpoints(tmp_path: Path):
    prefix = resolving(tmp_path, {"localhost": ["127.0.0.1"]})  # a Service with no ready pod
    code, lines, _ = each("-addr", "dns:///petsage-grpc-headless:50051", prefix=prefix)
    assert code == 7
    assert lines == ["0 endpoints: petsage-grpc-headless: name does not resolve; want at least 1"]


def test_localhost_on_ipv4_and_ipv6_is_two_endpoints(tmp_path: Path):
    assert can_bind("::1"), "no IPv6 loopback (::1) on this machine"
    port = free_port()
    on_both = {a[4][0] for a in socket.getaddrinfo("localhost", port, type=socket.SOCK_STREAM)}
    prefix: list[str] = []
    if on_both != {"127.0.0.1", "::1"}:
        prefix = resolving(tmp_path, {"localhost": ["127.0.0.1", "::1"]})
    with (
        ThreadedServer(make_config(host="127.0.0.1", port=port)),
        ThreadedServer(make_config(host="::1", port=port)),
    ):
        code, lines, _ = each("-addr", f"localhost:{port}", prefix=prefix)
    assert code == 0
    assert [line.split()[0] for line in lines[1:-1]] == [f"127.0.0.1:{port}", f"[::1]:{port}"]
    assert lines[-1].startswith("2/2 endpoints OK")
