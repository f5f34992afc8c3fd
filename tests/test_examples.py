"""The examples under examples/ run as documented."""

from __future__ import annotations

import signal
import sys

import grpc
import pytest

from petsage_grpc.health import NOT_SERVING, SERVING
from tests.helpers import ROOT, CLIProcess, check, wait_until

EXAMPLES = ["embedded_health.py", "embedded_sync_health.py"]  # grpc.aio, grpc's thread pool


def start_example(processes: list[CLIProcess], name: str) -> tuple[CLIProcess, int]:
    """An example on a port the system picks, once its service is SERVING."""
    process = CLIProcess([sys.executable, str(ROOT / "examples" / name), "0"])
    processes.append(process)
    port = process.wait_for_port()
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        wait_until(lambda: check(channel, "example.Orders") == SERVING, what="readiness")
    return process, port


@pytest.mark.parametrize("example", EXAMPLES)
def test_embedded_health_example_serves_until_sigterm(processes, example):
    process, port = start_example(processes, example)
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        assert check(channel, "readiness") == SERVING
    process.send(signal.SIGTERM)
    assert process.wait() == 0


@pytest.mark.parametrize("example", EXAMPLES)
def test_embedded_health_example_follows_maintenance_signals(processes, example):
    process, port = start_example(processes, example)
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        process.send(signal.SIGUSR1)
        wait_until(lambda: check(channel, "example.Orders") == NOT_SERVING, what="maintenance")
        assert check(channel, "readiness") == NOT_SERVING
        assert check(channel, "liveness") == SERVING
        process.send(signal.SIGUSR2)
        wait_until(lambda: check(channel, "readiness") == SERVING, what="the end of maintenance")
