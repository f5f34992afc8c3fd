"""Logs as an operator reads them: JSON lines with the fields of each event, and access logs."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import grpc
import pytest

from petsage_grpc._gen.petsage.v1 import smoke_pb2, smoke_pb2_grpc
from petsage_grpc.health import SERVING
from tests.helpers import ROOT, WAIT, CLIProcess, check, start_server, wait_until


def serve_json(processes: list[CLIProcess], *args: str) -> tuple[CLIProcess, int]:
    process = start_server("--log-format", "json", *args)
    processes.append(process)
    port = int(process.wait_for_line(r'"event": "serving".*"port": (\d+), "listener": "main"')[1])
    return process, port


def events(process: CLIProcess) -> list[dict[str, Any]]:
    return [json.loads(line) for line in process.read_available()]


def smoke(port: int) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        smoke_pb2_grpc.SmokeServiceStub(channel).SmokeTest(
            smoke_pb2.SmokeTestRequest(), timeout=WAIT
        )


@pytest.fixture(scope="module")
def whole_run() -> Iterator[list[dict[str, Any]]]:
    """Every line a JSON-logging server writes from start to SIGTERM, with a call in between."""
    processes: list[CLIProcess] = []
    try:
        process, port = serve_json(processes)
        smoke(port)
        process.send()
        assert process.wait() == 0
        yield [json.loads(line) for line in process.lines]
    finally:
        for started in processes:
            started.kill()


def test_every_json_line_has_the_common_fields(whole_run):
    assert whole_run
    for line in whole_run:
        assert {"time", "level", "event", "message", "logger"} <= set(line)


def test_stop_is_logged_as_signal_draining_stopping_stopped(whole_run):
    events = [line["event"] for line in whole_run][-4:]
    assert events == ["signal", "draining", "stopping", "stopped"]


@pytest.fixture(scope="module")
def drained(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CLIProcess]:
    """A JSON-logging server once its required drain check has started to fail."""
    drain = tmp_path_factory.mktemp("drain") / "drain"
    spec = f"name=drain,kind=file,target={drain},interval=50ms,failure_threshold=1"
    processes: list[CLIProcess] = []
    try:
        process, port = serve_json(processes, "--check", spec)
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            wait_until(lambda: check(channel, "readiness") == SERVING, what="readiness")
        drain.touch()
        process.wait_for_line('"event": "status_changed".*"new": "NOT_SERVING"')
        yield process
    finally:
        for started in processes:
            started.kill()


def test_status_change_carries_its_cause(drained):
    changed = [e for e in events(drained) if e["event"] == "status_changed"][-1]
    assert changed["service"] == "readiness"
    assert (changed["old"], changed["new"]) == ("SERVING", "NOT_SERVING")
    assert changed["check"] == "drain"
    assert changed["error"].endswith("the file exists")


def test_failing_check_is_logged_as_a_warning(drained):
    failed = [e for e in events(drained) if e["event"] == "check_changed"][-1]
    assert (failed["check"], failed["passing"], failed["level"]) == ("drain", False, "warning")


def test_rejected_call_carries_the_peer(processes):
    process, port = serve_json(processes)
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel, pytest.raises(grpc.RpcError):
        check(channel, "x" * 300)
    process.wait_for_line('"event": "rpc_rejected"')
    rejected = next(e for e in events(process) if e["event"] == "rpc_rejected")
    assert rejected["code"] == "INVALID_ARGUMENT"
    assert rejected["method"] == "/grpc.health.v1.Health/Check"
    assert rejected["peer"].startswith("ipv4:127.0.0.1:")
    assert rejected["error"] == "service name longer than 200 bytes"


def test_access_log_has_smoke_test_but_not_health_rpcs_by_default(processes):
    process, port = serve_json(processes)
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        check(channel, "")
    smoke(port)
    process.wait_for_line('"event": "rpc"')
    rpcs = [e for e in events(process) if e["event"] == "rpc"]
    assert [e["method"] for e in rpcs] == ["/petsage.v1.SmokeService/SmokeTest"]
    assert rpcs[0]["code"] == "OK" and rpcs[0]["duration_ms"] >= 0 and rpcs[0]["peer"]


def test_access_log_of_health_rpcs_can_be_turned_on(processes):
    process, port = serve_json(processes, "--access-log-health")
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        check(channel, "liveness")
    process.wait_for_line('"event": "rpc"')
    rpc = next(e for e in events(process) if e["event"] == "rpc")
    assert rpc["method"] == "/grpc.health.v1.Health/Check"


def test_text_is_the_default_format(processes):
    process = start_server()
    processes.append(process)
    process.wait_for_port()
    line = process.lines[-1]
    assert " INFO petsage_grpc.server: petsage-grpc " in line
    with pytest.raises(json.JSONDecodeError):
        json.loads(line)


def test_readme_names_every_event_the_code_logs():
    logged = set()
    for module in (ROOT / "petsage_grpc").rglob("*.py"):
        logged |= set(re.findall(r'"event": "([a-z_]+)"', module.read_text()))
    events_paragraph = (ROOT / "README.md").read_text().split("\nEvents: ", 1)[1].split("\n\n")[0]
    assert logged and logged <= set(re.findall(r"`([a-z_]+)`", events_paragraph))
