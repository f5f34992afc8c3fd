"""One client flooding a server with connections and Watch streams, for a bounded time.

Usage: python -m tests.apps.flood ADDRESS CONNECTIONS STREAMS SECONDS
Prints "flooding" once every stream has its first status, then holds them all until SECONDS
pass or it is terminated.
"""

from __future__ import annotations

import asyncio
import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


async def flood(address: str, connections: int, streams: int, seconds: float) -> None:
    own = [("grpc.use_local_subchannel_pool", 1)]
    channels = [grpc.aio.insecure_channel(address, options=own) for _ in range(connections)]
    calls = [
        health_pb2_grpc.HealthStub(channels[i % connections]).Watch(
            health_pb2.HealthCheckRequest(service="" if i % 2 else "readiness"),
            timeout=seconds + 30,  # the first statuses may take a while on a busy machine
        )
        for i in range(streams)
    ]
    await asyncio.gather(*(call.read() for call in calls))
    print("flooding", flush=True)
    await asyncio.sleep(seconds)  # hold the flood: the behaviour under test, bounded
    for call in calls:
        call.cancel()
    for channel in channels:
        await channel.close()


if __name__ == "__main__":
    address, connections, streams, seconds = sys.argv[1:5]
    asyncio.run(flood(address, int(connections), int(streams), float(seconds)))
