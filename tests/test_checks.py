"""Dependency checks against real dependencies on loopback, and what they do to health."""

from __future__ import annotations

import http.server
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from petsage_grpc._gen.petsage.v1 import smoke_pb2, smoke_pb2_grpc
from petsage_grpc.checks.spec import CheckSpec
from petsage_grpc.health import NOT_SERVING, SERVING
from tests.helpers import WAIT, ThreadedServer, check, make_config, statuses_until, watch

FAST: dict[str, Any] = {"interval": 0.05, "timeout": 1.0, "failure_threshold": 1}
# MANUAL checks run once at start, then only when a test says (run_checks).
MANUAL: dict[str, Any] = {"interval": 3600.0, "timeout": 1.0}


def serve_with(*checks: CheckSpec) -> ThreadedServer:
    return ThreadedServer(make_config(checks=checks))


def smoke(
    channel: grpc.Channel, run_checks: bool = False, timeout: float = WAIT
) -> smoke_pb2.SmokeTestResponse:
    response: smoke_pb2.SmokeTestResponse = smoke_pb2_grpc.SmokeServiceStub(channel).SmokeTest(
        smoke_pb2.SmokeTestRequest(run_checks=run_checks), timeout=timeout
    )
    return response


class Switch:
    """A python check whose result the test sets."""

    def __init__(self, passing: bool) -> None:
        self.passing = passing

    async def check(self) -> bool:
        return self.passing


def run_checks(server: ThreadedServer) -> None:
    """Run every check now, or wait for the runs in flight, and return once they have results."""
    server.run(server.server.monitor.run_checks(WAIT))


def assert_ready(channel: grpc.Channel, ready: bool) -> None:
    expected = SERVING if ready else NOT_SERVING
    assert check(channel, "readiness") == expected
    assert check(channel, "") == expected
    assert check(channel, "petsage.v1.SmokeService") == expected
    assert check(channel, "liveness") == SERVING


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    yield sock
    sock.close()


class StatusHandler(http.server.BaseHTTPRequestHandler):
    code = 200

    def do_GET(self) -> None:
        self.send_response(type(self).code)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def web() -> Iterator[tuple[str, type[StatusHandler]]]:
    handler = type("Handler", (StatusHandler,), {"code": 200})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/healthz", handler
    httpd.shutdown()
    httpd.server_close()


def test_watchers_follow_a_tcp_dependency_going_away_then_back(listener):
    port = listener.getsockname()[1]
    spec = CheckSpec(name="db", kind="tcp", target=f"127.0.0.1:{port}", **FAST)
    with serve_with(spec) as server, grpc.insecure_channel(server.address) as channel:
        run_checks(server)  # the first results are in
        assert_ready(channel, True)
        readiness = watch(channel, "readiness")
        assert next(readiness).status == SERVING
        listener.close()
        assert statuses_until(readiness, NOT_SERVING)[-1] == NOT_SERVING
        assert_ready(channel, False)
        with socket.socket() as reopened:
            reopened.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            reopened.bind(("127.0.0.1", port))
            reopened.listen()
            assert statuses_until(readiness, SERVING)[-1] == SERVING
            assert_ready(channel, True)
        readiness.cancel()


def test_grpc_dependency_going_not_serving_takes_readiness_with_it():
    with ThreadedServer() as dependency:
        spec = CheckSpec(name="peer", kind="grpc", target=dependency.address, **FAST)
        with serve_with(spec) as server, grpc.insecure_channel(server.address) as channel:
            run_checks(server)  # the first results are in
            assert_ready(channel, True)
            stream = watch(channel, "")
            assert next(stream).status == SERVING
            dependency.server.monitor.enter_maintenance()
            assert statuses_until(stream, NOT_SERVING)[-1] == NOT_SERVING
            assert "NOT_SERVING" in smoke(channel).message
            dependency.server.monitor.leave_maintenance()
            assert statuses_until(stream, SERVING)[-1] == SERVING
            stream.cancel()


def test_grpc_check_of_a_named_service():
    with ThreadedServer() as dependency:
        spec = CheckSpec(
            name="peer", kind="grpc", target=dependency.address, service="no.such.Service", **FAST
        )
        with serve_with(spec) as server, grpc.insecure_channel(server.address) as channel:
            run_checks(server)  # the first results are in
            assert_ready(channel, False)
            assert smoke(channel).checks[0].last_error == (
                "upstream does not know service 'no.such.Service'"
            )


def test_http_500_from_an_optional_dependency_degrades_but_keeps_readiness(web):
    url, handler = web
    spec = CheckSpec(name="search", kind="http", target=url, required=False, **FAST)
    with serve_with(spec) as server, grpc.insecure_channel(server.address) as channel:
        run_checks(server)  # the first results are in
        assert smoke(channel).status == smoke_pb2.SMOKE_STATUS_OK
        handler.code = 500
        response = smoke(channel, run_checks=True)
        assert response.status == smoke_pb2.SMOKE_STATUS_DEGRADED
        assert "search" in response.message and "HTTP 500" in response.message
        assert_ready(channel, True)


def test_required_http_dependency_fails_on_500_passes_on_302(web):
    url, handler = web
    spec = CheckSpec(name="api", kind="http", target=url, **FAST)
    with serve_with(spec) as server, grpc.insecure_channel(server.address) as channel:
        run_checks(server)  # the first results are in
        handler.code = 500
        run_checks(server)
        assert_ready(channel, False)
        assert smoke(channel).status == smoke_pb2.SMOKE_STATUS_FAILING
        handler.code = 302
        run_checks(server)
        assert_ready(channel, True)


def test_drain_file_takes_readiness_down_while_it_exists(tmp_path: Path):
    drain = tmp_path / "drain"
    spec = CheckSpec(name="drain", kind="file", target=str(drain), **FAST)
    with serve_with(spec) as server, grpc.insecure_channel(server.address) as channel:
        run_checks(server)  # the first results are in
        stream = watch(channel, "readiness")
        assert next(stream).status == SERVING
        drain.touch()
        assert statuses_until(stream, NOT_SERVING)[-1] == NOT_SERVING
        assert check(channel, "liveness") == SERVING
        drain.unlink()
        assert statuses_until(stream, SERVING)[-1] == SERVING
        stream.cancel()


def test_hanging_python_check_never_slows_health_rpcs():
    spec = CheckSpec(
        name="stuck", kind="python", target="tests.apps.checks:hang", interval=60, timeout=60
    )
    with serve_with(spec) as server, grpc.insecure_channel(server.address) as channel:
        # Each call's deadline is far shorter than the hanging check's timeout.
        health = smoke_pb2_grpc.SmokeServiceStub(channel)
        for _ in range(20):
            assert check(channel, "liveness") == SERVING
            assert health.SmokeTest(smoke_pb2.SmokeTestRequest(), timeout=2).version
        assert check(channel, "readiness") == NOT_SERVING
        assert smoke(channel).checks[0].last_error == "no result yet"


def test_hanging_check_fails_at_its_timeout():
    spec = CheckSpec(name="stuck", kind="python", target="tests.apps.checks:hang", **MANUAL)
    with serve_with(spec) as server, grpc.insecure_channel(server.address) as channel:
        run_checks(server)  # the first results are in
        assert_ready(channel, False)
        assert smoke(channel).checks[0].last_error == "timed out after 1s"


def test_fresh_run_of_checks_is_bounded_by_the_call_deadline():
    spec = CheckSpec(
        name="stuck", kind="python", target="tests.apps.checks:hang", interval=3600, timeout=60
    )
    with serve_with(spec) as server, grpc.insecure_channel(server.address) as channel:
        response = smoke(channel, run_checks=True, timeout=1.0)  # would fail DEADLINE_EXCEEDED
        assert response.status == smoke_pb2.SMOKE_STATUS_FAILING


def test_failure_threshold_three_needs_three_failures():
    outcome = Switch(passing=True)

    spec = CheckSpec(
        name="flaky", kind="python", target=outcome.check, failure_threshold=3, **MANUAL
    )
    with serve_with(spec) as server, grpc.insecure_channel(server.address) as channel:
        run_checks(server)  # the first results are in
        assert_ready(channel, True)
        outcome.passing = False
        run_checks(server)
        run_checks(server)
        assert_ready(channel, True)
        run_checks(server)
        assert_ready(channel, False)


def test_success_threshold_two_needs_two_successes():
    outcome = Switch(passing=False)

    spec = CheckSpec(
        name="flaky",
        kind="python",
        target=outcome.check,
        failure_threshold=1,
        success_threshold=2,
        **MANUAL,
    )
    with serve_with(spec) as server, grpc.insecure_channel(server.address) as channel:
        run_checks(server)  # the first results are in
        assert_ready(channel, False)
        outcome.passing = True
        run_checks(server)
        assert_ready(channel, False)
        run_checks(server)
        assert_ready(channel, True)


def test_a_failure_between_successes_restarts_the_count():
    outcome = Switch(passing=True)

    spec = CheckSpec(
        name="flaky", kind="python", target=outcome.check, failure_threshold=2, **MANUAL
    )
    with serve_with(spec) as server, grpc.insecure_channel(server.address) as channel:
        run_checks(server)  # the first results are in
        for passes in (False, True, False, True):
            outcome.passing = passes
            run_checks(server)
            assert_ready(channel, True)


def test_deep_smoke_test_lists_every_check(tmp_path: Path):
    checks = (
        CheckSpec(name="ok", kind="python", target="tests.apps.checks:ok", **MANUAL),
        CheckSpec(
            name="drain", kind="file", target=str(tmp_path / "drain"), required=False, **MANUAL
        ),
    )
    with serve_with(*checks) as server, grpc.insecure_channel(server.address) as channel:
        run_checks(server)  # the first results are in
        response = smoke(channel)
        assert [(c.name, c.kind, c.required, c.passing) for c in response.checks] == [
            ("ok", "python", True, True),
            ("drain", "file", False, True),
        ]
        first = response.checks[1]
        assert first.last_error == ""
        assert first.HasField("last_change_time") and first.HasField("last_run_time")
        assert first.last_latency.ToNanoseconds() > 0

        (tmp_path / "drain").touch()
        assert smoke(channel).checks[1].passing  # the cached result, until a run
        fresh = smoke(channel, run_checks=True)
        assert fresh.status == smoke_pb2.SMOKE_STATUS_OK  # one failure of three so far
        assert fresh.checks[1].last_error.endswith("the file exists")
        assert fresh.checks[1].last_run_time.ToNanoseconds() > first.last_run_time.ToNanoseconds()


def test_maintenance_is_seen_through_every_health_rpc():
    with serve_with() as server, grpc.insecure_channel(server.address) as channel:
        server.server.monitor.enter_maintenance()
        assert_ready(channel, False)
        response = smoke(channel)
        assert response.status == smoke_pb2.SMOKE_STATUS_FAILING
        assert "maintenance" in response.message
        server.server.monitor.leave_maintenance()
        assert_ready(channel, True)


def test_service_set_by_the_application_stops_following_readiness(tmp_path: Path):
    drain = tmp_path / "drain"
    spec = CheckSpec(name="drain", kind="file", target=str(drain), failure_threshold=1, **MANUAL)
    with serve_with(spec) as server, grpc.insecure_channel(server.address) as channel:
        run_checks(server)  # the first results are in
        server.server.monitor.set("petsage.v1.SmokeService", SERVING)
        drain.touch()
        run_checks(server)
        assert check(channel, "readiness") == NOT_SERVING
        assert check(channel, "petsage.v1.SmokeService") == SERVING


def test_reserved_names_cannot_be_set_by_the_application():
    with serve_with() as server:
        for name in ("liveness", "readiness", ""):
            with pytest.raises(ValueError, match="derived"):
                server.server.monitor.set(name, NOT_SERVING)


def test_liveness_goes_not_serving_only_when_shutting_down():
    with ThreadedServer() as server, grpc.insecure_channel(server.address) as channel:
        stream = watch(channel, "liveness")
        assert next(stream).status == SERVING
        server.run(server.server.drain_and_stop())
        assert [r.status for r in stream] == [NOT_SERVING]


def test_check_added_at_run_time_counts_for_readiness():
    with serve_with() as server, grpc.insecure_channel(server.address) as channel:
        spec = CheckSpec(name="late", kind="python", target="tests.apps.checks:refuse", **MANUAL)
        server.loop.call_soon_threadsafe(server.server.monitor.add_check, spec)
        stream = watch(channel, "readiness")
        assert statuses_until(stream, NOT_SERVING)[-1] == NOT_SERVING
        assert "returned False" in smoke(channel).message
        stream.cancel()


def test_python_check_raising_reports_its_error():
    async def broken() -> None:
        raise ConnectionError("pool exhausted")

    spec = CheckSpec(name="pool", kind="python", target=broken, **MANUAL)
    with serve_with(spec) as server, grpc.insecure_channel(server.address) as channel:
        run_checks(server)  # the first results are in
        assert smoke(channel).checks[0].last_error == "pool exhausted"


def test_check_that_ignores_its_timeout_is_not_run_twice_at_once():
    spec = CheckSpec(
        name="stubborn",
        kind="python",
        target="tests.apps.checks:stubborn",
        interval=3600,
        timeout=0.2,
    )
    with serve_with(spec) as server, grpc.insecure_channel(server.address) as channel:
        run_checks(server)
        assert smoke(channel).checks[0].last_error == "timed out after 0.2s"
        run_checks(server)
        assert smoke(channel).checks[0].last_error.startswith("the previous run is still going")
