"""The examples under examples/ run as documented."""

from __future__ import annotations

import signal
import sys

import grpc

from petsage_grpc.health import NOT_SERVING, SERVING
from tests.helpers import ROOT, CLIProcess, check, wait_until


def start_example(processes: list[CLIProcess]) -> tuple[CLIProcess, int]:
    """examples/embedded_health.py on a port the system picks, once its service is SERVING."""
    process = CLIProcess([sys.executable, str(ROOT / "examples" / "embedded_health.py"), "0"])
    processes.append(process)
    port = process.wait_for_port()
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        wait_until(lambda: check(channel, "example.Orders") == SERVING, what="readiness")
    return process, port


def test_embedded_health_example_serves_until_sigterm(processes):
    process, port = start_example(processes)
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        assert check(channel, "readiness") == SERVING
    process.send(signal.SIGTERM)
    assert process.wait() == 0


def test_embedded_health_example_follows_maintenance_signals(processes):
    process, port = start_example(processes)
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        process.send(signal.SIGUSR1)
        wait_until(lambda: check(channel, "example.Orders") == NOT_SERVING, what="maintenance")
        assert check(channel, "readiness") == NOT_SERVING
        assert check(channel, "liveness") == SERVING
        process.send(signal.SIGUSR2)
        wait_until(lambda: check(channel, "readiness") == SERVING, what="the end of maintenance")
