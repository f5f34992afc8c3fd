"""grpcio-health-checking's HealthServicer on grpc.server(ThreadPoolExecutor(10)): the server most
Python users copy. Bench server contract: argv PORT; prints `PORT <n>` once serving (service ""
SERVING); each stdin line `set STATUS` sets "" and prints `ok` once set() returned; stops at EOF.
"""

from __future__ import annotations

import sys
from concurrent import futures

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc


def main() -> None:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=10))
    servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port(f"127.0.0.1:{sys.argv[1]}")
    servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    server.start()
    print(f"PORT {port}", flush=True)
    for line in sys.stdin:
        command = line.split()
        if command[:1] == ["set"]:
            servicer.set("", health_pb2.HealthCheckResponse.ServingStatus.Value(command[1]))
            print("ok", flush=True)
    server.stop(None)


if __name__ == "__main__":
    main()
