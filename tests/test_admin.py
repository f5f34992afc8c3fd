"""The admin HTTP port: every endpoint's code and body, and the metrics after real traffic."""

from __future__ import annotations

import asyncio
import json
import socket
import urllib.error
import urllib.request
from collections.abc import Iterator
from email.message import Message
from pathlib import Path
from typing import Any

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from petsage_grpc import __version__
from petsage_grpc._gen.petsage.v1 import smoke_pb2, smoke_pb2_grpc
from petsage_grpc.admin import AdminApp, AdminServer
from petsage_grpc.checks.spec import CheckSpec
from tests.helpers import (
    WAIT,
    ThreadedServer,
    check,
    make_config,
    open_never_reading_watch,
    wait_until,
    watch,
)

MANUAL: dict[str, Any] = {"interval": 3600.0, "timeout": 1.0, "failure_threshold": 1}


def admin_server(*checks: CheckSpec) -> ThreadedServer:
    return ThreadedServer(make_config(admin_port=0, checks=checks))


@pytest.fixture
def admin() -> Iterator[ThreadedServer]:
    with admin_server() as server:
        yield server


def get(server: ThreadedServer, path: str, method: str = "GET") -> tuple[int, Message, bytes]:
    """(status, headers (case-insensitive), body)."""
    url = f"http://127.0.0.1:{server.server.admin_port}{path}"
    request = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(request, timeout=WAIT) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers, error.read()


def get_json(server: ThreadedServer, path: str, method: str = "GET") -> tuple[int, Any]:
    code, headers, body = get(server, path, method)
    assert headers["Content-Type"] == "application/json"
    return code, json.loads(body)


def run_checks(server: ThreadedServer) -> None:
    server.run(server.server.monitor.run_checks(WAIT))


# --- the endpoints -----------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/healthz", "/readyz"])
def test_probe_endpoint_is_200_while_serving(admin, path):
    assert get_json(admin, path) == (200, {"status": "SERVING"})


def test_readyz_is_503_in_maintenance_while_healthz_stays_200(admin):
    admin.server.monitor.enter_maintenance()
    assert get_json(admin, "/readyz") == (503, {"status": "NOT_SERVING"})
    assert get_json(admin, "/healthz") == (200, {"status": "SERVING"})


def test_healthz_is_503_when_shutting_down(admin):
    admin.state.shutdown()
    assert get_json(admin, "/healthz") == (503, {"status": "NOT_SERVING"})


def test_original_smoke_test_endpoint_has_its_exact_shape(admin):
    assert get_json(admin, "/api/v1/smoke-test") == (200, {"status": "ok"})


def test_original_status_endpoint_has_its_exact_shape(admin):
    assert get_json(admin, "/api/v1/status") == (
        200,
        {
            "status": "ok",
            "message": "PetSage services are running smoothly!",
            "version": __version__,
        },
    )


def test_status_endpoint_reports_the_version_an_embedding_application_gives():
    with ThreadedServer(make_config(admin_port=0), version="2.3.0") as server:
        assert get_json(server, "/api/v1/status")[1]["version"] == "2.3.0"


def test_original_endpoints_say_degraded_when_an_optional_check_fails(tmp_path: Path):
    (tmp_path / "drain").touch()
    spec = CheckSpec(name="cache", kind="file", target=str(tmp_path / "drain"), required=False)
    with admin_server(spec) as server:
        run_checks(server)
        assert get_json(server, "/api/v1/smoke-test") == (200, {"status": "degraded"})
        code, body = get_json(server, "/api/v1/status")
        assert (code, body["status"]) == (200, "degraded")
        assert "optional check 'cache' fails" in body["message"]


def test_original_endpoints_say_failing_with_503_when_a_required_check_fails(tmp_path: Path):
    (tmp_path / "drain").touch()
    spec = CheckSpec(name="drain", kind="file", target=str(tmp_path / "drain"), **MANUAL)
    with admin_server(spec) as server:
        run_checks(server)
        assert get_json(server, "/api/v1/smoke-test") == (503, {"status": "failing"})
        code, body = get_json(server, "/api/v1/status")
        assert (code, body["status"]) == (503, "failing")
        assert "required check 'drain' fails" in body["message"]
        assert get_json(server, "/readyz") == (503, {"status": "NOT_SERVING"})


def test_unknown_path_is_404_with_a_json_error(admin):
    assert get_json(admin, "/api/v2/status") == (
        404,
        {"error": "not found", "path": "/api/v2/status"},
    )


def test_wrong_method_is_405_with_allow(admin):
    code, headers, body = get(admin, "/healthz", method="POST")
    assert code == 405
    assert headers["Allow"] == "GET, HEAD"
    assert json.loads(body)["error"] == "method not allowed"


def test_head_answers_without_a_body(admin):
    code, headers, body = get(admin, "/readyz", method="HEAD")
    assert (code, body) == (200, b"")
    assert int(headers["Content-Length"]) > 0


def test_query_strings_are_ignored(admin):
    assert get_json(admin, "/healthz?verbose=1") == (200, {"status": "SERVING"})


def send_garbage(server: ThreadedServer) -> bytes:
    """What the admin port answers to a request that is not HTTP."""
    with socket.create_connection(("127.0.0.1", server.server.admin_port), timeout=WAIT) as sock:
        sock.sendall(b"\x16\x03\x01 not http at all\r\n\r\n")
        return sock.recv(100)


def test_garbage_is_400(admin):
    assert send_garbage(admin).startswith(b"HTTP/1.1 400")


def test_port_keeps_serving_after_garbage(admin):
    send_garbage(admin)
    assert get_json(admin, "/healthz")[0] == 200


def test_admin_port_binds_loopback_by_default():
    assert make_config().admin_host == "127.0.0.1"


# --- the metrics -------------------------------------------------------------------------


Metrics = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(server: ThreadedServer) -> Metrics:
    code, headers, body = get(server, "/metrics")
    assert code == 200
    assert headers["Content-Type"].startswith("text/plain")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(body.decode())
        for sample in family.samples
    }


def labels(**values: str) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(values.items()))


CHECK = {"grpc_service": "grpc.health.v1.Health", "grpc_method": "Check", "grpc_type": "unary"}
WATCH = {
    "grpc_service": "grpc.health.v1.Health",
    "grpc_method": "Watch",
    "grpc_type": "server_stream",
}
SMOKE = {
    "grpc_service": "petsage.v1.SmokeService",
    "grpc_method": "SmokeTest",
    "grpc_type": "unary",
}


def metrics_after_real_checks(server: ThreadedServer) -> Metrics:
    """The metrics after three Checks that succeed and one of an unknown service."""
    with grpc.insecure_channel(server.address) as channel:
        for _ in range(3):
            check(channel, "")
        with pytest.raises(grpc.RpcError):
            check(channel, "no.such.Service")
    return scrape(server)


def test_rpc_counters_count_calls_by_code(admin):
    metrics = metrics_after_real_checks(admin)
    assert metrics[("grpc_server_started_total", labels(**CHECK))] == 4
    assert metrics[("grpc_server_handled_total", labels(**CHECK, grpc_code="OK"))] == 3
    assert metrics[("grpc_server_handled_total", labels(**CHECK, grpc_code="NOT_FOUND"))] == 1
    assert metrics[("grpc_server_in_flight_rpcs", labels(**CHECK))] == 0


def test_rpc_histogram_times_every_call(admin):
    metrics = metrics_after_real_checks(admin)
    assert metrics[("grpc_server_handling_seconds_count", labels(**CHECK))] == 4
    assert metrics[("grpc_server_handling_seconds_bucket", labels(**CHECK, le="+Inf"))] == 4


def test_open_watch_streams_show_in_flight(admin):
    with grpc.insecure_channel(admin.address) as channel:
        stream = watch(channel, "")
        next(stream)
        metrics = scrape(admin)
        assert metrics[("petsage_watch_streams", ())] == 1
        assert metrics[("grpc_server_in_flight_rpcs", labels(**WATCH))] == 1
        stream.cancel()
    wait_until(lambda: admin.state.watcher_count == 0, what="the stream to close")
    metrics = scrape(admin)
    assert metrics[("grpc_server_handled_total", labels(**WATCH, grpc_code="CANCELLED"))] == 1
    # a stream's lifetime is no handling time
    assert ("grpc_server_handling_seconds_count", labels(**WATCH)) not in metrics


def test_a_watch_stream_whose_client_takes_nothing_is_cut_and_counted():
    with ThreadedServer(make_config(admin_port=0, watch_send_timeout=0.5)) as server:
        assert server.server.port is not None
        stuck = open_never_reading_watch(server.server.port, "")
        try:
            wait_until(
                lambda: scrape(server).get(("petsage_watch_streams_cut_total", ())) == 1,
                what="the cut stream counted",
            )
            wait_until(lambda: server.state.watcher_count == 0, what="the stream to close")
        finally:
            stuck.close()


def test_a_call_its_client_cancelled_is_counted_cancelled():
    slow = CheckSpec(name="slow", kind="python", target="tests.apps.checks:slow", **MANUAL)
    with (
        ThreadedServer(make_config(admin_port=0, checks=[slow])) as server,
        grpc.insecure_channel(server.address) as channel,
    ):
        smoke = smoke_pb2_grpc.SmokeServiceStub(channel).SmokeTest
        call = smoke.future(smoke_pb2.SmokeTestRequest(run_checks=True), timeout=WAIT)
        wait_until(lambda: sum(server.server.in_flight.counts().values()) > 0, what="the call")
        call.cancel()
        cancelled = ("grpc_server_handled_total", labels(**SMOKE, grpc_code="CANCELLED"))
        wait_until(lambda: scrape(server).get(cancelled) == 1, what="the call counted")


def test_serving_gauge_follows_a_status_flip(admin):
    assert scrape(admin)[("petsage_health_serving", labels(service="readiness"))] == 1
    admin.server.monitor.enter_maintenance()
    metrics = scrape(admin)
    assert metrics[("petsage_health_serving", labels(service="readiness"))] == 0
    assert metrics[("petsage_health_serving", labels(service="liveness"))] == 1


def test_check_metrics_show_a_failing_check(tmp_path: Path):
    (tmp_path / "drain").touch()
    spec = CheckSpec(name="drain", kind="file", target=str(tmp_path / "drain"), **MANUAL)
    with admin_server(spec) as server:
        check_labels = labels(check="drain", kind="file", required="true")
        run_checks(server)
        first = scrape(server)[("petsage_check_consecutive_failures", check_labels)]
        run_checks(server)
        metrics = scrape(server)
        assert metrics[("petsage_check_passing", check_labels)] == 0
        assert metrics[("petsage_check_consecutive_failures", check_labels)] == first + 1 > 1
        assert metrics[("petsage_check_latency_seconds", check_labels)] > 0
        (tmp_path / "drain").unlink()
        run_checks(server)
        metrics = scrape(server)
        assert metrics[("petsage_check_passing", check_labels)] == 1
        assert metrics[("petsage_check_consecutive_failures", check_labels)] == 0


def test_build_info_names_the_version(admin):
    assert scrape(admin)[("petsage_build_info", labels(version=__version__))] == 1


def test_process_metrics_are_exported(admin):
    metrics = scrape(admin)
    assert metrics[("process_resident_memory_bytes", ())] > 0
    assert metrics[("process_open_fds", ())] > 0


def test_absolute_form_request_target_is_served(admin):
    port = admin.server.admin_port
    with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as sock:
        sock.sendall(f"GET http://127.0.0.1:{port}/healthz HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        assert sock.recv(100).startswith(b"HTTP/1.1 200")


# --- the HTTP server against slow and many clients ----------------------------------------


def test_client_trickling_its_body_is_closed_after_the_request_timeout():
    async def scenario() -> bytes:
        server = AdminServer(AdminApp(None, lambda: (b"", "")), request_timeout=0.3)  # type: ignore[arg-type]
        port = await server.start("127.0.0.1", 0)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"POST /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nab")
        await writer.drain()  # and never the rest of the body
        try:
            return await asyncio.wait_for(reader.read(), WAIT)  # b"" once closed
        finally:
            writer.close()
            await server.stop()

    assert asyncio.run(scenario()) == b""


def test_connections_past_the_limit_never_raise_the_count_past_it():
    async def scenario() -> list[int]:
        server = AdminServer(AdminApp(None, lambda: (b"", "")), max_connections=2)  # type: ignore[arg-type]
        port = await server.start("127.0.0.1", 0)
        counts = []
        held = []
        try:
            for _ in range(4):
                held.append(await asyncio.open_connection("127.0.0.1", port))
                for _ in range(100):  # until the server has accepted it
                    await asyncio.sleep(0.01)
                    if server.connection_count == min(len(held), 2):
                        break
                counts.append(server.connection_count)
            return counts
        finally:
            for _, held_writer in held:
                held_writer.close()
            await server.stop()

    assert asyncio.run(scenario()) == [1, 2, 2, 2]


def test_calls_of_unknown_methods_are_counted_under_one_name(admin):
    with grpc.insecure_channel(admin.address) as channel:
        for method in ("/no.such.Service/A", "/grpc.health.v1.Health/Nope"):
            with pytest.raises(grpc.RpcError):
                channel.unary_unary(method)(b"", timeout=WAIT)
    unknown = labels(
        grpc_service="unknown",
        grpc_method="unknown",
        grpc_type="unknown",
        grpc_code="UNIMPLEMENTED",
    )
    assert scrape(admin)[("grpc_server_handled_total", unknown)] == 2
