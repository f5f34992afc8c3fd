"""SmokeTest on every replica, not one at random: `petsage_grpc.client.smoke_each()` against real
servers on 127.0.0.1, 127.0.0.2 and 127.0.0.3 (one port for all three where the system lets
them share it, as the pods behind a headless Service do)."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from concurrent import futures
from contextlib import ExitStack
from pathlib import Path

import grpc
import pytest

from petsage_grpc.checks.spec import CheckSpec
from petsage_grpc.client import Endpoint, resolve, smoke_each
from tests.helpers import ThreadedServer, free_port, make_config

HOSTS = ("127.0.0.1", "127.0.0.2", "127.0.0.3")


def can_bind(host: str) -> bool:
    with socket.socket() as probe:
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
        if can_bind(HOSTS[1]):
            port = free_port()
            self.places = [(host, port) for host in HOSTS]
        else:
            self.places = [("127.0.0.1", free_port()) for _ in HOSTS]

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
