"""PetSage's SyncHealthServicer and SyncServerInterceptor (metrics on) on
grpc.server(ThreadPoolExecutor(10)): the health core on grpc's thread-pool server, Watch on the
non-blocking path. Bench server contract: argv PORT; prints `PORT <n>` once serving (service ""
SERVING); each stdin line `set STATUS` sets "" and prints `ok` once set() returned; stops at EOF.
"""

from __future__ import annotations

import sys
from concurrent import futures

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from petsage_grpc.health import HealthState
from petsage_grpc.inflight import InFlight
from petsage_grpc.interceptors import SyncServerInterceptor
from petsage_grpc.metrics import RpcMetrics
from petsage_grpc.sync_health import SyncHealthServicer

PENDING = 20_000  # as PetSage's own server: let the Watch limit, not core's shedding, decide


def main() -> None:
    state = HealthState()
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=10),
        interceptors=[SyncServerInterceptor(RpcMetrics(), InFlight())],
        options=[
            ("grpc.so_reuseport", 0),
            ("grpc.server.max_pending_requests", PENDING),
            ("grpc.server.max_pending_requests_hard_limit", 2 * PENDING),
        ],
    )
    health_pb2_grpc.add_HealthServicer_to_server(SyncHealthServicer(state), server)
    port = server.add_insecure_port(f"127.0.0.1:{sys.argv[1]}")
    state.set("", health_pb2.HealthCheckResponse.SERVING)
    server.start()
    print(f"PORT {port}", flush=True)
    for line in sys.stdin:
        command = line.split()
        if command[:1] == ["set"]:
            state.set("", health_pb2.HealthCheckResponse.ServingStatus.Value(command[1]))
            print("ok", flush=True)
    server.stop(None)


if __name__ == "__main__":
    main()
