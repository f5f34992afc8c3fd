"""Client-side health checking with real clients and real servers on loopback: grpcio's own
client (C-core) with round_robin and healthCheckConfig routes around a replica that stops
SERVING, and comes back to it, without a failed call."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from petsage_grpc._gen.petsage.v1 import smoke_pb2, smoke_pb2_grpc
from petsage_grpc.checks.spec import CheckSpec
from petsage_grpc.client import channel, target
from petsage_grpc.health import NOT_SERVING
from tests.helpers import WAIT, ThreadedServer, make_config, wait_until

SMOKE_TEST = ("petsage.v1.SmokeService", "SmokeTest", "unary")


@dataclass
class Replica:
    server: ThreadedServer
    drain: Path

    @property
    def calls(self) -> int:
        return self.server.server.metrics.started.get(SMOKE_TEST, 0)

    def readiness(self) -> int | None:
        return self.server.state.get("readiness")


@pytest.fixture
def replicas(tmp_path: Path) -> Iterator[list[Replica]]:
    with ExitStack() as stack:
        fleet = []
        for number in range(3):
            drain = tmp_path / f"drain{number}"
            spec = CheckSpec(
                name="drain", kind="file", target=str(drain), interval=0.02, failure_threshold=1
            )
            server = stack.enter_context(ThreadedServer(make_config(checks=(spec,))))
            fleet.append(Replica(server, drain))
        yield fleet


class Caller:
    """Calls SmokeTest through one health-checked round-robin channel, counting failures."""

    def __init__(self, replicas: list[Replica]) -> None:
        self.channel = channel([r.server.address for r in replicas], timeout=WAIT)
        self.stub = smoke_pb2_grpc.SmokeServiceStub(self.channel)
        self.failures: list[grpc.RpcError] = []

    def call(self, times: int) -> None:
        for _ in range(times):
            try:
                self.stub.SmokeTest(smoke_pb2.SmokeTestRequest())
            except grpc.RpcError as error:
                self.failures.append(error)


def wait_for_calls_to_reach(caller: Caller, replica: Replica) -> None:
    def reached() -> bool:
        before = replica.calls
        caller.call(10)
        return replica.calls > before

    wait_until(reached, what="calls to reach the replica")


def wait_for_calls_to_avoid(caller: Caller, replica: Replica) -> None:
    def avoided() -> bool:
        before = replica.calls
        caller.call(30)
        return replica.calls == before

    wait_until(avoided, what="calls to go around the replica")


def test_round_robin_spreads_calls_over_every_replica(replicas):
    caller = Caller(replicas)
    for replica in replicas:  # every connection ready and healthy
        wait_for_calls_to_reach(caller, replica)
    before = [r.calls for r in replicas]
    caller.call(90)
    assert [r.calls - b for r, b in zip(replicas, before, strict=True)] == [30, 30, 30]
    assert caller.failures == []


def drain_the_middle_one(replicas: list[Replica]) -> tuple[Caller, Replica]:
    """Calls reach every replica, then the middle one drains until the client goes around it."""
    caller = Caller(replicas)
    for replica in replicas:
        wait_for_calls_to_reach(caller, replica)
    draining = replicas[1]
    draining.drain.touch()  # the operator drains the pod
    wait_until(lambda: draining.readiness() == NOT_SERVING, what="the replica to drain")
    wait_for_calls_to_avoid(caller, draining)  # the client has seen NOT_SERVING
    return caller, draining


def test_draining_replica_gets_no_new_calls(replicas):
    caller, draining = drain_the_middle_one(replicas)
    seen = draining.calls
    caller.call(300)
    assert draining.calls == seen
    assert replicas[0].calls > 0 and replicas[2].calls > 0
    assert caller.failures == []


def test_replica_back_in_service_gets_calls_again(replicas):
    caller, draining = drain_the_middle_one(replicas)
    draining.drain.unlink()  # back in service
    wait_for_calls_to_reach(caller, draining)
    assert caller.failures == []


def test_replica_flapping_many_times_a_second_fails_no_call(replicas):
    flapping = replicas[0].server
    monitor = flapping.server.monitor

    async def flap() -> None:
        for _ in range(200):  # the load under test: 400 status changes, about 200 a second
            monitor.enter_maintenance()
            await asyncio.sleep(0.0025)
            monitor.leave_maintenance()
            await asyncio.sleep(0.0025)

    caller = Caller(replicas)
    flaps = asyncio.run_coroutine_threadsafe(flap(), flapping.loop)
    while not flaps.done():
        caller.call(20)
    flaps.result(WAIT)
    caller.call(100)
    assert caller.failures == []


def test_every_replica_draining_fails_calls_clearly(replicas):
    caller = Caller(replicas)
    caller.call(3)
    for replica in replicas:
        replica.server.server.monitor.enter_maintenance()
    codes: list[grpc.StatusCode] = []

    def refused() -> bool:
        try:
            caller.stub.SmokeTest(smoke_pb2.SmokeTestRequest(), timeout=1)
        except grpc.RpcError as error:
            codes.append(error.code())
            return True
        return False

    wait_until(refused, what="the client to see every replica drained")
    assert codes == [grpc.StatusCode.UNAVAILABLE]


def test_targets_from_addresses():
    assert target(["127.0.0.1:1", "127.0.0.2:2"]) == "ipv4:127.0.0.1:1,127.0.0.2:2"
    assert target(["[::1]:1", "[::1]:2"]) == "ipv6:[::1]:1,[::1]:2"
    assert target("dns:///petsage:50051") == "dns:///petsage:50051"
    with pytest.raises(ValueError, match="IP address"):
        target(["petsage:50051"])
    with pytest.raises(ValueError, match="cannot share"):
        target(["127.0.0.1:1", "[::1]:1"])


@pytest.mark.parametrize("seconds", [0.00001, 2.5, 2592000.0])
def test_service_config_timeouts_are_valid_durations(replicas, seconds):
    with channel([replicas[0].server.address], timeout=seconds) as backends:
        assert (
            smoke_pb2_grpc.SmokeServiceStub(backends)
            .SmokeTest(smoke_pb2.SmokeTestRequest(), timeout=WAIT)
            .version
        )


def test_no_call_sent_before_sigterm_fails_with_the_default_settings(processes):
    import signal
    import threading
    import time

    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from tests.helpers import start_server

    stopping, staying = start_server(), start_server()
    processes.extend((stopping, staying))
    addresses = [f"127.0.0.1:{process.wait_for_port()}" for process in (stopping, staying)]
    failed: list[tuple[float, grpc.StatusCode]] = []
    done = threading.Event()
    with channel(addresses, timeout=WAIT) as backends:
        stub = health_pb2_grpc.HealthStub(backends)
        request = health_pb2.HealthCheckRequest(service="readiness")
        stub.Check(request, wait_for_ready=True, timeout=WAIT)

        def call() -> None:  # a closed loop, as 16 busy callers of a service are
            while not done.is_set():
                started = time.monotonic()
                try:
                    stub.Check(request)
                except grpc.RpcError as error:
                    failed.append((started, error.code()))

        callers = [threading.Thread(target=call) for _ in range(16)]
        for caller in callers:
            caller.start()
        time.sleep(0.5)  # the load, before the stop (bounded: it is the behaviour under test)
        signalled = time.monotonic()
        stopping.send(signal.SIGTERM)
        assert stopping.wait() == 0
        done.set()
        for caller in callers:
            caller.join(WAIT)
    assert [code for started, code in failed if started < signalled] == []
