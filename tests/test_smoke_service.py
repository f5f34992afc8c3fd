"""petsage.v1.SmokeService and server reflection over real sockets."""

from __future__ import annotations

import socket
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

from petsage_grpc import __version__
from petsage_grpc._gen.petsage.v1 import smoke_pb2, smoke_pb2_grpc
from petsage_grpc.checks.spec import CheckSpec
from petsage_grpc.health import NOT_SERVING, SERVING
from petsage_grpc.server import HEALTH_WORKERS, SMOKE_WORKERS, WORKERS
from tests.helpers import WAIT, ThreadedServer, make_config, wait_until


def smoke_test(channel: grpc.Channel) -> smoke_pb2.SmokeTestResponse:
    response: smoke_pb2.SmokeTestResponse = smoke_pb2_grpc.SmokeServiceStub(channel).SmokeTest(
        smoke_pb2.SmokeTestRequest(), timeout=WAIT
    )
    return response


def test_smoke_test_is_ok_with_the_package_version(channel):
    response = smoke_test(channel)
    assert response.status == smoke_pb2.SMOKE_STATUS_OK
    assert response.message == "PetSage services are running smoothly!"
    assert response.version == __version__


def test_smoke_test_reports_uptime_that_grows(channel):
    first = smoke_test(channel).uptime.ToNanoseconds()
    second = smoke_test(channel).uptime.ToNanoseconds()
    assert 0 < first < second


def test_smoke_test_names_the_pod_from_pod_name(monkeypatch):
    monkeypatch.setenv("POD_NAME", "petsage-grpc-7c9f-abcde")
    with ThreadedServer() as running, grpc.insecure_channel(running.address) as chan:
        assert smoke_test(chan).instance == "petsage-grpc-7c9f-abcde"


def test_smoke_test_names_the_host_without_pod_name(monkeypatch):
    monkeypatch.delenv("POD_NAME", raising=False)
    with ThreadedServer() as running, grpc.insecure_channel(running.address) as chan:
        assert smoke_test(chan).instance == socket.gethostname()


def test_smoke_test_start_time_stays_put_and_matches_the_uptime(channel):
    before = time.time()
    first = smoke_test(channel)
    after = time.time()
    assert smoke_test(channel).start_time == first.start_time
    answered = (first.start_time.ToNanoseconds() + first.uptime.ToNanoseconds()) / 1e9
    assert before - 0.01 <= answered <= after + 0.01  # start time + uptime = when it answered


def test_an_embedding_application_sets_the_version_reported():
    with (
        ThreadedServer(make_config(), version="2.3.0") as running,
        grpc.insecure_channel(running.address) as chan,
    ):
        assert smoke_test(chan).version == "2.3.0"


def test_smoke_test_fails_when_the_server_is_not_serving(server, channel):
    server.state.set("", NOT_SERVING)
    response = smoke_test(channel)
    assert response.status == smoke_pb2.SMOKE_STATUS_FAILING
    assert response.message == "PetSage is not serving"


def test_smoke_test_says_so_when_shutting_down(server, channel):
    server.state.shutdown()
    response = smoke_test(channel)
    assert response.status == smoke_pb2.SMOKE_STATUS_FAILING
    assert "shutting down" in response.message


def test_reflection_lists_both_services(channel):
    services = ProtoReflectionDescriptorDatabase(channel).get_services()
    assert {"grpc.health.v1.Health", "petsage.v1.SmokeService"} <= set(services)


def test_reflection_describes_the_smoke_test_response(channel):
    database = ProtoReflectionDescriptorDatabase(channel)
    file = database.FindFileContainingSymbol("petsage.v1.SmokeTestResponse")
    assert file.name == "petsage/v1/smoke.proto"


def test_no_reflection_answers_unimplemented():
    with (
        ThreadedServer(make_config(reflection=False)) as running,
        grpc.insecure_channel(running.address) as chan,
    ):
        with pytest.raises(grpc.RpcError) as error:
            ProtoReflectionDescriptorDatabase(chan).get_services()
        assert error.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_smoke_test_returns_the_latest_changes_with_their_reason(tmp_path):
    from petsage_grpc.checks.spec import CheckSpec
    from tests.helpers import wait_until

    drain = tmp_path / "drain"
    spec = CheckSpec(
        name="drain", kind="file", target=str(drain), interval=0.05, failure_threshold=1
    )
    with (
        ThreadedServer(make_config(checks=(spec,))) as server,
        grpc.insecure_channel(server.address) as channel,
    ):
        wait_until(lambda: server.state.get("readiness") == SERVING, what="readiness")
        drain.touch()
        wait_until(lambda: server.state.get("readiness") == NOT_SERVING, what="the drain")
        response = smoke_pb2_grpc.SmokeServiceStub(channel).SmokeTest(
            smoke_pb2.SmokeTestRequest(), timeout=WAIT
        )
    readiness = [c for c in response.recent_changes if c.name == "readiness"][-1]
    assert (readiness.old_state, readiness.new_state, readiness.reason) == (
        "SERVING",
        "NOT_SERVING",
        "required check 'drain' fails: the file exists",
    )


def test_smoke_tests_waiting_on_a_hung_check_leave_check_answering():
    """More SmokeTests waiting on a fresh run than the server has RPC threads: a probe's Check
    is still answered at once, since SmokeTest waits on threads of its own."""
    hung = CheckSpec(
        name="hung", kind="python", target="tests.apps.checks:hang", interval=3600, timeout=60
    )
    with (
        ThreadedServer(make_config(checks=[hung])) as running,
        grpc.insecure_channel(running.address) as channel,
    ):
        smoke = smoke_pb2_grpc.SmokeServiceStub(channel).SmokeTest
        waiting = [
            smoke.future(smoke_pb2.SmokeTestRequest(run_checks=True), timeout=WAIT)
            for _ in range(2 * (WORKERS + HEALTH_WORKERS))
        ]
        try:
            wait_until(lambda: smoke_tests_in_flight(running) >= SMOKE_WORKERS, what="waits")
            probe = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service="liveness"), timeout=1
            )  # the kubelet's default timeout
            assert probe.status == SERVING
            assert not any(call.done() for call in waiting)  # still waiting on the check
        finally:
            for call in waiting:
                call.cancel()


def test_a_fresh_run_without_a_deadline_is_answered():
    """grpcurl sets no deadline unless asked: the fresh run is bounded by the server instead."""
    slow = CheckSpec(name="slow", kind="python", target="tests.apps.checks:slow", interval=3600)
    with (
        ThreadedServer(make_config(checks=[slow])) as running,
        grpc.insecure_channel(running.address) as channel,
    ):
        response = smoke_pb2_grpc.SmokeServiceStub(channel).SmokeTest(
            smoke_pb2.SmokeTestRequest(run_checks=True)
        )
    assert response.status == smoke_pb2.SMOKE_STATUS_OK


def test_a_fresh_run_asked_for_once_the_checks_have_stopped_runs_nothing():
    from tests.apps import checks

    spec = CheckSpec(name="counted", kind="python", target="tests.apps.checks:counted")
    config = make_config(checks=[spec], fresh_run_reuse=0.0)
    with ThreadedServer(config) as running, grpc.insecure_channel(running.address) as channel:
        wait_until(lambda: running.state.get("readiness") == SERVING, what="readiness")
        running.run(running.server.monitor.close())  # as the stop does, at its first step
        runs = len(checks.RUNS)
        response = smoke_pb2_grpc.SmokeServiceStub(channel).SmokeTest(
            smoke_pb2.SmokeTestRequest(run_checks=True), timeout=WAIT
        )
        assert [c.name for c in response.checks] == ["counted"]  # its last result
        assert len(checks.RUNS) == runs


def smoke_tests_in_flight(running: ThreadedServer) -> int:
    counts = running.server.in_flight.counts()
    return sum(n for (service, _, _), n in counts.items() if service == "petsage.v1.SmokeService")
