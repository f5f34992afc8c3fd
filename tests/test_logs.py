"""Logs as an operator reads them: JSON lines with the fields of each event, and access logs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import grpc
import pytest

from petsage_grpc._gen.petsage.v1 import smoke_pb2, smoke_pb2_grpc
from petsage_grpc.health import SERVING
from tests.helpers import WAIT, CLIProcess, check, start_server, wait_until


def serve_json(processes, *args: str) -> tuple[CLIProcess, int]:
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


def test_every_json_line_parses_and_has_time_level_event_and_message(processes):
    process, port = serve_json(processes)
    smoke(port)
    process.send()
    assert process.wait() == 0
    lines = [json.loads(line) for line in process.lines]
    assert lines
    for line in lines:
        assert {"time", "level", "event", "message", "logger"} <= set(line)
    assert [line["event"] for line in lines][-3:] == ["signal", "stopping", "stopped"]


def test_status_change_carries_service_old_new_check_and_error(processes, tmp_path: Path):
    drain = tmp_path / "drain"
    spec = f"name=drain,kind=file,target={drain},interval=50ms,failure_threshold=1"
    process, port = serve_json(processes, "--check", spec)
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        wait_until(lambda: check(channel, "readiness") == SERVING, what="readiness")
    drain.touch()
    process.wait_for_line('"event": "status_changed".*"new": "NOT_SERVING"')
    changed = [e for e in events(process) if e["event"] == "status_changed"][-1]
    assert changed["service"] == "readiness"
    assert (changed["old"], changed["new"]) == ("SERVING", "NOT_SERVING")
    assert changed["check"] == "drain"
    assert changed["error"].endswith("drain exists")
    failed = [e for e in events(process) if e["event"] == "check_changed"][-1]
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
    assert "200 bytes" in rejected["error"]


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
