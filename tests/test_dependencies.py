"""Checks that never lie, each against real servers on loopback: a slow dependency delays no other
check, no health RPC and not the stop; fresh runs are bounded; gRPC upstreams are followed, not
polled; scoped checks move only their services; errors name no target."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from petsage_grpc._gen.petsage.v1 import smoke_pb2, smoke_pb2_grpc
from petsage_grpc.checks.spec import CheckSpec
from petsage_grpc.health import NOT_SERVING, SERVING
from tests.apps.dependencies import Listener, Trickler, WebServer
from tests.certs import SERVER_NAME, make_certs
from tests.helpers import (
    WAIT,
    CLIProcess,
    ThreadedServer,
    check,
    free_port,
    make_config,
    run_cli,
    wait_until,
    watch,
)

RECOMMENDATIONS = "petsage.v1.Recommendations"


@contextlib.contextmanager
def checking(**settings: Any) -> Iterator[tuple[ThreadedServer, grpc.Channel]]:
    """A server with these settings, and a channel to it."""
    with (
        ThreadedServer(make_config(**settings)) as server,
        grpc.insecure_channel(server.address) as channel,
    ):
        yield server, channel


def smoke(channel: grpc.Channel, run_checks: bool = False) -> smoke_pb2.SmokeTestResponse:
    response: smoke_pb2.SmokeTestResponse = smoke_pb2_grpc.SmokeServiceStub(channel).SmokeTest(
        smoke_pb2.SmokeTestRequest(run_checks=run_checks), timeout=WAIT
    )
    return response


def by_name(response: smoke_pb2.SmokeTestResponse) -> dict[str, smoke_pb2.CheckResult]:
    return {result.name: result for result in response.checks}


# --- isolation -------------------------------------------------------------------------------


def test_trickling_http_dependency_delays_nothing_else(tmp_path: Path):
    drain = tmp_path / "drain"  # never created: the file check must keep passing
    with Trickler(pause=0.3) as trickler, Listener() as database:
        fast = "interval=0.2,timeout=0.5,failure_threshold=1"
        checks = [
            f"name=slow{i},kind=http,target=http://127.0.0.1:{trickler.port}/,required=false,{fast}"
            for i in range(8)  # more than the default thread pool has threads here
        ]
        checks += [
            f"name=drain,kind=file,target={drain},{fast}",
            f"name=db,kind=tcp,target=127.0.0.1:{database.port},{fast}",
        ]
        flags = [arg for spec in checks for arg in ("--check", spec)]
        process = CLIProcess(
            ["serve", "--host", "127.0.0.1", "--port", "0", "--drain-delay", "0.5",
             "--grace-period", "1", *flags]
        )  # fmt: skip
        try:
            port = process.wait_for_port()
            with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
                wait_until(lambda: check(channel, "readiness") == SERVING, what="readiness")
                stream = watch(channel, "readiness")
                assert next(stream).status == SERVING
                wait_until(lambda: trickler.opened >= 24, what="three runs of each slow check")
                results = by_name(smoke(channel))
                stream.cancel()
                seen_after = [r.status for r in stream_rest(stream)]
            assert [results[n].passing for n in ("drain", "db")] == [True, True]
            assert {results[f"slow{i}"].last_error for i in range(8)} <= {
                "timed out after 0.5s",
                "no result yet",
            }
            assert NOT_SERVING not in seen_after
            assert trickler.open <= 8 + 1  # each timed-out run closed its connection
            process.send(signal.SIGTERM)
            assert process.wait(timeout=0.5 + 1 + 1) == 0  # drain + grace + 1 s
        finally:
            process.kill()


def stream_rest(stream: Any) -> list[Any]:
    """What a cancelled Watch stream had delivered before the cancellation."""
    seen = []
    try:
        for response in stream:
            seen.append(response)
    except grpc.RpcError as error:
        assert error.code() == grpc.StatusCode.CANCELLED
    return seen


def test_hung_check_never_delays_the_stop():
    process = CLIProcess(
        ["serve", "--host", "127.0.0.1", "--port", "0", "--grace-period", "1",
         "--check", "name=stuck,kind=python,target=tests.apps.checks:stubborn,timeout=0.2"]
    )  # fmt: skip
    try:
        process.wait_for_port()
        process.wait_for_line("check 'stuck' .*fails")
        process.send(signal.SIGTERM)
        assert process.wait(timeout=1 + 1 + 1) == 0
    finally:
        process.kill()


# --- bounded on demand ----------------------------------------------------------------------


def test_300_fresh_runs_at_once_cost_the_dependency_a_handful_of_connections():
    with Listener() as database:
        spec = CheckSpec(name="db", kind="tcp", target=f"127.0.0.1:{database.port}")
        config = make_config(checks=(spec,), fresh_run_reuse=1.0)
        with ThreadedServer(config) as server, grpc.insecure_channel(server.address) as channel:
            wait_until(lambda: database.accepted == 1, what="the first run")
            stub = smoke_pb2_grpc.SmokeServiceStub(channel)
            request = smoke_pb2.SmokeTestRequest(run_checks=True)
            calls = [stub.SmokeTest.future(request, timeout=WAIT) for _ in range(300)]
            statuses = {call.result().status for call in calls}
        assert statuses == {smoke_pb2.SMOKE_STATUS_OK}
        assert database.accepted <= 5


def test_fresh_run_reuses_a_result_younger_than_the_setting():
    with Listener() as database:
        spec = CheckSpec(name="db", kind="tcp", target=f"127.0.0.1:{database.port}")
        config = make_config(checks=(spec,), fresh_run_reuse=3600.0)
        with ThreadedServer(config) as server, grpc.insecure_channel(server.address) as channel:
            wait_until(lambda: database.accepted == 1, what="the first run")
            for _ in range(3):
                smoke(channel, run_checks=True)
        assert database.accepted == 1


# --- gRPC upstreams, followed ---------------------------------------------------------------


def grpc_check(target: str, **settings: Any) -> CheckSpec:
    # An interval of an hour: only a pushed status can explain a change within the test.
    values: dict[str, Any] = {"interval": 3600.0, "timeout": 0.5, "failure_threshold": 1}
    values.update(settings)
    return CheckSpec(name="upstream", kind="grpc", target=target, **values)


@pytest.fixture
def upstream() -> Iterator[ThreadedServer]:
    with ThreadedServer() as server:
        yield server


def test_upstream_flip_reaches_our_watchers_without_waiting_for_the_interval(upstream):
    config = make_config(checks=(grpc_check(upstream.address),))
    with ThreadedServer(config) as ours, grpc.insecure_channel(ours.address) as channel:
        wait_until(lambda: check(channel, "readiness") == SERVING, what="readiness")
        stream = watch(channel, "readiness")
        seen = [next(stream).status]
        upstream.loop.call_soon_threadsafe(upstream.server.monitor.enter_maintenance)
        seen.append(next(stream).status)
        upstream.loop.call_soon_threadsafe(upstream.server.monitor.leave_maintenance)
        seen.append(next(stream).status)
        stream.cancel()
        assert seen == [SERVING, NOT_SERVING, SERVING]
        assert by_name(smoke(channel))["upstream"].last_error == ""


def test_upstream_not_serving_is_the_error_shown(upstream):
    config = make_config(checks=(grpc_check(upstream.address),))
    with ThreadedServer(config) as ours, grpc.insecure_channel(ours.address) as channel:
        wait_until(lambda: check(channel, "readiness") == SERVING, what="readiness")
        upstream.loop.call_soon_threadsafe(upstream.server.monitor.enter_maintenance)
        wait_until(lambda: check(channel, "readiness") == NOT_SERVING, what="the flip")
        assert by_name(smoke(channel))["upstream"].last_error == "upstream NOT_SERVING"


def serve_process(port: int) -> CLIProcess:
    process = CLIProcess(["serve", "--host", "127.0.0.1", "--port", str(port)])
    process.wait_for_port()
    return process


def test_upstream_killed_counts_as_failing_after_the_timeout(processes):
    port = free_port()
    processes.append(upstream := serve_process(port))
    config = make_config(checks=(grpc_check(f"127.0.0.1:{port}", service="readiness"),))
    with ThreadedServer(config) as ours, grpc.insecure_channel(ours.address) as channel:
        wait_until(lambda: check(channel, "readiness") == SERVING, what="readiness")
        upstream.proc.kill()  # no NOT_SERVING on the way out: only the broken stream tells
        wait_until(lambda: check(channel, "readiness") == NOT_SERVING, what="the gap")
        assert by_name(smoke(channel))["upstream"].last_error == "upstream unavailable"


def test_upstream_back_after_a_gap_is_followed_again(processes):
    port = free_port()
    processes.append(upstream := serve_process(port))
    config = make_config(checks=(grpc_check(f"127.0.0.1:{port}", service="readiness"),))
    with ThreadedServer(config) as ours, grpc.insecure_channel(ours.address) as channel:
        wait_until(lambda: check(channel, "readiness") == SERVING, what="readiness")
        upstream.proc.kill()
        wait_until(lambda: check(channel, "readiness") == NOT_SERVING, what="the gap")
        processes.append(serve_process(port))
        wait_until(lambda: check(channel, "readiness") == SERVING, what="the reconnection")


def test_grpcio_health_checking_servicer_is_followed():
    servicer = health.HealthServicer()
    servicer.set("orders", health_pb2.HealthCheckResponse.SERVING)
    upstream = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    health_pb2_grpc.add_HealthServicer_to_server(servicer, upstream)
    port = upstream.add_insecure_port("127.0.0.1:0")
    upstream.start()
    try:
        spec = grpc_check(f"127.0.0.1:{port}", service="orders")
        with checking(checks=(spec,)) as (_, channel):
            wait_until(lambda: check(channel, "readiness") == SERVING, what="readiness")
            servicer.set("orders", health_pb2.HealthCheckResponse.NOT_SERVING)
            wait_until(lambda: check(channel, "readiness") == NOT_SERVING, what="the flip")
    finally:
        upstream.stop(None)


class CheckOnly(health_pb2_grpc.HealthServicer):
    """An upstream that answers Check but not Watch (UNIMPLEMENTED), as older servers do."""

    def __init__(self) -> None:
        self.status = health_pb2.HealthCheckResponse.SERVING
        self.checks = 0

    def Check(self, request: Any, context: Any) -> health_pb2.HealthCheckResponse:
        self.checks += 1
        return health_pb2.HealthCheckResponse(status=self.status)


def test_upstream_without_watch_is_polled():
    servicer = CheckOnly()
    upstream = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    health_pb2_grpc.add_HealthServicer_to_server(servicer, upstream)
    port = upstream.add_insecure_port("127.0.0.1:0")
    upstream.start()
    try:
        spec = grpc_check(f"127.0.0.1:{port}", interval=0.05)
        with checking(checks=(spec,)) as (_, channel):
            wait_until(lambda: check(channel, "readiness") == SERVING, what="readiness")
            servicer.status = health_pb2.HealthCheckResponse.NOT_SERVING
            wait_until(lambda: check(channel, "readiness") == NOT_SERVING, what="a poll")
        assert servicer.checks >= 2
    finally:
        upstream.stop(None)


@contextlib.contextmanager
def mtls_upstream(tmp_path: Path, client_certificate: bool) -> Iterator[CheckSpec]:
    """An upstream PetSage that wants client certificates, and a grpc check of it (with or
    without one)."""
    certs = make_certs(tmp_path)
    tls = make_config(
        tls_cert=str(certs.server.cert), tls_key=str(certs.server.key), tls_client_ca=str(certs.ca)
    )
    client = {"tls_cert": str(certs.client.cert), "tls_key": str(certs.client.key)}
    with ThreadedServer(tls) as upstream:
        yield grpc_check(
            f"localhost:{upstream.server.port}",
            tls=True,
            tls_ca=str(certs.ca),
            tls_server_name=SERVER_NAME,
            **(client if client_certificate else {}),
        )


def test_upstream_on_mtls_is_followed(tmp_path: Path):
    with (
        mtls_upstream(tmp_path, client_certificate=True) as spec,
        checking(checks=(spec,)) as (_, channel),
    ):
        wait_until(lambda: check(channel, "readiness") == SERVING, what="readiness")


def test_upstream_on_mtls_refuses_a_check_without_a_client_certificate(tmp_path: Path):
    with (
        mtls_upstream(tmp_path, client_certificate=False) as spec,
        checking(checks=(spec,)) as (_, channel),
    ):
        wait_until(
            lambda: by_name(smoke(channel))["upstream"].last_error != "no result yet",
            what="a result",
        )
        assert check(channel, "readiness") == NOT_SERVING


# --- per-service health -----------------------------------------------------------------------


def test_scoped_check_moves_only_its_services(tmp_path: Path):
    drain = tmp_path / "recommender-down"
    spec = CheckSpec(
        name="recommender",
        kind="file",
        target=str(drain),
        interval=0.05,
        failure_threshold=1,
        services=(RECOMMENDATIONS,),
    )
    config = make_config(checks=(spec,), services=(RECOMMENDATIONS,))
    with ThreadedServer(config) as server, grpc.insecure_channel(server.address) as channel:
        wait_until(lambda: check(channel, RECOMMENDATIONS) == SERVING, what="the first result")
        drain.touch()
        wait_until(lambda: check(channel, RECOMMENDATIONS) == NOT_SERVING, what="the failure")
        others = [check(channel, name) for name in ("readiness", "", "petsage.v1.SmokeService")]
        assert others == [SERVING, SERVING, SERVING]
        assert smoke(channel).status == smoke_pb2.SMOKE_STATUS_DEGRADED


def test_declared_service_is_listed_but_not_reflected():
    with checking(services=(RECOMMENDATIONS,)) as (_, channel):
        listed = health_pb2_grpc.HealthStub(channel).List(
            health_pb2.HealthListRequest(), timeout=WAIT
        )
        assert listed.statuses[RECOMMENDATIONS].status == SERVING
        from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

        answers = reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=WAIT
        )
        names = [s.name for a in answers for s in a.list_services_response.service]
        assert RECOMMENDATIONS not in names


def test_check_scoped_to_an_unknown_service_stops_start_up():
    result = run_cli(
        "serve", "--port", "0",
        "--check", "name=r,kind=tcp,target=127.0.0.1:1,services=no.such.Service",
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "petsage-grpc: error: check 'r': services: 'no.such.Service' is not a service of this"
        " server (declare it with --service)"
    ]


# --- http -------------------------------------------------------------------------------------


def test_http_check_sends_headers_read_from_references(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("CATALOG_TOKEN", "Bearer s3cret")
    (tmp_path / "client").write_text("petsage\n")
    with WebServer() as web:
        spec = CheckSpec(
            name="catalog",
            kind="http",
            target=f"http://127.0.0.1:{web.port}/healthz",
            headers=(
                ("Authorization", "env:CATALOG_TOKEN"),
                ("X-Client", f"file:{tmp_path}/client"),
            ),
        )
        with ThreadedServer(make_config(checks=(spec,))):
            wait_until(lambda: bool(web.requests), what="a request")
    path, headers = web.requests[0]
    assert (path, headers["Authorization"], headers["X-Client"]) == (
        "/healthz",
        "Bearer s3cret",
        "petsage",
    )


@pytest.mark.parametrize(("status", "passing"), [(204, True), (200, False), (503, False)])
def test_http_check_passes_on_the_expected_statuses_only(status: int, passing: bool):
    with WebServer(status) as web:
        spec = CheckSpec(
            name="api",
            kind="http",
            target=f"http://127.0.0.1:{web.port}/",
            expect_status=((204, 204), (300, 399)),
        )
        with ThreadedServer(make_config(checks=(spec,))) as server:
            server.run(server.server.monitor.run_checks(WAIT))
            assert server.server.monitor.runners[0].is_passing() is passing


def test_https_check_trusts_the_given_ca(tmp_path: Path):
    certs = make_certs(tmp_path)
    with WebServer(tls=(certs.server.cert, certs.server.key)) as web:
        spec = CheckSpec(
            name="api", kind="http", target=f"https://127.0.0.1:{web.port}/", tls_ca=str(certs.ca)
        )
        with ThreadedServer(make_config(checks=(spec,))) as server:
            server.run(server.server.monitor.run_checks(WAIT))
            assert server.server.monitor.runners[0].why_failing() == ""


def test_https_check_without_the_ca_is_not_trusted(tmp_path: Path):
    certs = make_certs(tmp_path)
    with WebServer(tls=(certs.server.cert, certs.server.key)) as web:
        spec = CheckSpec(name="api", kind="http", target=f"https://localhost:{web.port}/")
        with ThreadedServer(make_config(checks=(spec,))) as server:
            server.run(server.server.monitor.run_checks(WAIT))
            assert server.server.monitor.runners[0].why_failing() == "TLS certificate not trusted"


def test_url_with_a_password_stops_start_up_without_showing_it():
    result = run_cli(
        "serve", "--port", "0", "--check", "name=api,kind=http,target=http://bob:s3cret@api/health"
    )
    assert result.returncode == 2
    assert "must not carry a user or password" in result.stderr
    assert "s3cret" not in result.stderr
    assert len(result.stderr.splitlines()) == 1


def test_header_in_clear_on_the_command_line_is_refused():
    result = run_cli(
        "serve", "--port", "0",
        "--check", "name=api,kind=http,target=http://api/,header.Authorization=Bearer s3cret",
    )  # fmt: skip
    assert result.returncode == 2
    assert "s3cret" not in result.stderr
    assert "env:VARIABLE or file:PATH" in result.stderr


# --- errors name no target ------------------------------------------------------------------


def test_errors_shown_name_no_host_port_path_or_secret(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("API_TOKEN", "s3cret-token")
    closed = free_port()
    existing = tmp_path / "secret-dir" / "drain"
    existing.parent.mkdir()
    existing.touch()
    with WebServer(503) as web:
        specs = (
            CheckSpec(name="refused", kind="tcp", target=f"127.0.0.1:{closed}"),
            CheckSpec(name="unresolvable", kind="tcp", target="db.secret-name.invalid:5432"),
            CheckSpec(
                name="web",
                kind="http",
                target=f"http://127.0.0.1:{web.port}/secret-path",
                headers=(("Authorization", "env:API_TOKEN"),),
            ),
            CheckSpec(name="web-refused", kind="http", target=f"http://127.0.0.1:{closed}/x"),
            CheckSpec(name="upstream", kind="grpc", target=f"127.0.0.1:{closed}", timeout=0.2),
            CheckSpec(name="drain", kind="file", target=str(existing)),
        )
        config = make_config(checks=specs, admin_port=0, admin_host="127.0.0.1")
        with ThreadedServer(config) as server, grpc.insecure_channel(server.address) as channel:
            server.run(server.server.monitor.run_checks(WAIT))
            wait_until(
                lambda: "no result yet" not in str(smoke(channel)), what="every check's result"
            )
            response = smoke(channel)
            url = f"http://127.0.0.1:{server.server.admin_port}/api/v1/status"
            with pytest.raises(urllib.error.HTTPError) as failing:  # 503: a required check fails
                urllib.request.urlopen(url, timeout=WAIT)
            status = json.loads(failing.value.read())
    errors = {result.name: result.last_error for result in response.checks}
    assert errors == {
        "refused": "connection refused",
        "unresolvable": "name does not resolve",
        "web": "HTTP 503",
        "web-refused": "connection refused",
        "upstream": "upstream unavailable",
        "drain": "the file exists",
    }
    shown = f"{response} {status}"
    for secret in ("127.0.0.1", str(closed), str(web.port), "secret", str(tmp_path)):
        assert secret not in shown


def test_secret_free_errors_still_reach_the_log_with_the_details(processes):
    closed = free_port()
    process = CLIProcess(
        ["serve", "--host", "127.0.0.1", "--port", "0",
         "--check", f"name=db,kind=tcp,target=127.0.0.1:{closed}"]
    )  # fmt: skip
    processes.append(process)
    line = process.wait_for_line("check 'db' \\(tcp\\) fails").string
    assert "connection refused" in line
    assert str(closed) in line  # the server log may say more than callers see


def test_sigterm_is_not_held_by_a_dependency_thread(processes):
    # A hung DNS lookup holds a thread of the loop's executor: the exit does not wait for it.
    env = {"PYTHONPATH": os.getcwd()}
    process = CLIProcess(
        ["serve", "--host", "127.0.0.1", "--port", "0", "--grace-period", "0.5",
         "--check", "name=stuck,kind=python,target=tests.apps.checks:blocking_thread"],
        env=env,
    )  # fmt: skip
    processes.append(process)
    process.wait_for_port()
    process.wait_for_line("check 'stuck' .*fails")
    process.send(signal.SIGTERM)
    assert process.wait(timeout=0.5 + 1 + 1) == 0


def test_a_wait_for_a_followed_checks_first_status_ends_when_it_stops():
    """A SmokeTest waiting on a gRPC check's first pushed status during the drain is answered at
    the stop, not at its deadline."""
    from petsage_grpc.checks.runner import CheckRunner

    async def wait_then_stop(silent: socket.socket) -> bool:
        port = silent.getsockname()[1]
        spec = CheckSpec(name="up", kind="grpc", target=f"127.0.0.1:{port}", timeout=60)
        runner = CheckRunner(spec, lambda runner: None)
        runner.start()
        # Its connection arrives: it follows the upstream now, which never answers.
        connection, _ = await asyncio.wait_for(asyncio.get_running_loop().sock_accept(silent), WAIT)
        with connection:
            first = runner.run_now()
            assert not first.done()
            await runner.stop()
            return first.done()

    with socket.socket() as silent:  # takes connections, says nothing
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        silent.setblocking(False)
        assert asyncio.run(asyncio.wait_for(wait_then_stop(silent), WAIT))
