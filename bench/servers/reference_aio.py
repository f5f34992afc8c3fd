"""grpcio-health-checking's asyncio HealthServicer on grpc.aio.server(). Bench server contract:
argv PORT; prints `PORT <n>` once serving (service "" SERVING); each stdin line `set STATUS`
sets "" and prints `ok` once set() returned; stops at EOF.
"""

from __future__ import annotations

import asyncio
import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer


async def main() -> None:
    server = grpc.aio.server()
    servicer = HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port(f"127.0.0.1:{sys.argv[1]}")
    await servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    await server.start()
    print(f"PORT {port}", flush=True)
    loop = asyncio.get_running_loop()
    while line := await loop.run_in_executor(None, sys.stdin.readline):
        command = line.split()
        if command[:1] == ["set"]:
            await servicer.set("", health_pb2.HealthCheckResponse.ServingStatus.Value(command[1]))
            print("ok", flush=True)
    await server.stop(None)


if __name__ == "__main__":
    asyncio.run(main())
