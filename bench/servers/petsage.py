"""PetSage as shipped (default settings, metrics interceptor on), under the bench server
contract: argv PORT; prints `PORT <n>` once serving; each stdin line `set STATUS` sets "" and
prints `ok` once set() returned; stops at EOF.
"""

from __future__ import annotations

import asyncio
import os
import sys

os.environ.setdefault("GRPC_VERBOSITY", "NONE")

from grpc_health.v1 import health_pb2

from petsage_grpc.config import Config
from petsage_grpc.server import Server


async def main() -> None:
    server = Server(Config(host="127.0.0.1", port=int(sys.argv[1])))
    await server.start()
    print(f"PORT {server.port}", flush=True)
    loop = asyncio.get_running_loop()
    while line := await loop.run_in_executor(None, sys.stdin.readline):
        command = line.split()
        if command[:1] == ["set"]:
            server.state.set("", health_pb2.HealthCheckResponse.ServingStatus.Value(command[1]))
            print("ok", flush=True)
    server.request_stop(force=True)
    await server.drain_and_stop()


if __name__ == "__main__":
    asyncio.run(main())
