"""A rollout: N PetSage servers behind one round-robin, health-checked client, replaced one by one
(SIGTERM, drain delay D, exit, a new server on the same port), while the client calls SmokeTest
in a loop. Reports failed calls (the goal: none) and the latency of calls during the rollout.

Usage: python bench/rollout.py [N] [DRAIN_DELAY]   (loopback only, bounded)
"""

from __future__ import annotations

import re
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import grpc

from petsage_grpc._gen.petsage.v1 import smoke_pb2, smoke_pb2_grpc
from petsage_grpc.client import channel

CLI = str(Path(sys.executable).parent / "petsage-grpc")
SERVERS = int(sys.argv[1]) if len(sys.argv) > 1 else 3
DRAIN = float(sys.argv[2]) if len(sys.argv) > 2 else 1.0
LIMIT = 60.0  # seconds any one step may take


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start(port: int) -> subprocess.Popen[str]:
    server = subprocess.Popen(
        [CLI, "serve", "--host", "127.0.0.1", "--port", str(port), "--drain-delay", str(DRAIN)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert server.stderr is not None
    deadline = time.monotonic() + LIMIT
    while time.monotonic() < deadline:
        line = server.stderr.readline()
        if re.search(r"serving on ", line) or not line:
            break
    threading.Thread(target=server.stderr.read, daemon=True).start()  # keep the pipe drained
    return server


def main() -> None:
    ports = [free_port() for _ in range(SERVERS)]
    servers = [start(port) for port in ports]
    latencies: list[float] = []
    failures: list[str] = []
    done = threading.Event()

    def call_in_a_loop() -> None:
        with channel([f"127.0.0.1:{port}" for port in ports], timeout=5) as backends:
            stub = smoke_pb2_grpc.SmokeServiceStub(backends)
            while not done.is_set():
                began = time.perf_counter()
                try:
                    stub.SmokeTest(smoke_pb2.SmokeTestRequest())
                except grpc.RpcError as error:
                    failures.append(error.code().name)
                latencies.append(time.perf_counter() - began)

    caller = threading.Thread(target=call_in_a_loop)
    caller.start()
    began = time.monotonic()
    try:
        for index, port in enumerate(ports):
            old = servers[index]
            old.terminate()  # SIGTERM: NOT_SERVING at once, stops after the drain delay
            old.wait(LIMIT)
            servers[index] = start(port)
        done.set()
        caller.join(LIMIT)
    finally:
        done.set()
        for server in servers:
            server.terminate()
            server.wait(LIMIT)
    took = time.monotonic() - began
    ordered = sorted(latencies)
    p99 = ordered[int(len(ordered) * 0.99)] * 1000 if ordered else float("nan")
    print(f"Rollout of {SERVERS} servers, drain delay {DRAIN:g}s, one round-robin client:\n")
    print("| calls | failed | p50 | p99 | max | rollout took |")
    print("|---|---|---|---|---|---|")
    print(
        f"| {len(latencies)} | {len(failures)} | {statistics.median(ordered) * 1000:.2f} ms "
        f"| {p99:.2f} ms | {ordered[-1] * 1000:.2f} ms | {took:.1f} s |"
    )
    if failures:
        print(f"\nfailed calls by code: { {c: failures.count(c) for c in set(failures)} }")


if __name__ == "__main__":
    main()
