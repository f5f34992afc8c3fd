"""Many Watch streams from one grpc.aio client process, driven by bench/run.py over stdin/stdout.

Usage: python bench/watchers.py ADDRESS COUNT CHANNELS
Opens COUNT Watch streams of "" in one burst, spread over CHANNELS connections, and prints one
JSON line: {"opened", "failed": {code: n}, "first_all_s"}. Then reads commands, each answered
with one JSON line:
  expect STATUS SECONDS [CANCEL]  cancel CANCEL streams at once, then wait until every other
                                  stream's latest status is STATUS: {"arrivals": [monotonic
                                  times], "missing": n}
  quit                            cancel everything and exit
Times are time.monotonic(), comparable with the driver's on the same machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

Status = health_pb2.HealthCheckResponse.ServingStatus


class Stream:
    def __init__(self, call: grpc.aio.UnaryStreamCall) -> None:
        self.call = call
        self.latest: int | None = None
        self.changed = asyncio.Event()
        self.seen_at: dict[int, float] = {}
        self.code: str | None = None

    async def follow(self) -> None:
        try:
            async for response in self.call:
                self.latest = response.status
                self.seen_at.setdefault(response.status, time.monotonic())
                self.changed.set()
        except grpc.aio.AioRpcError as error:
            self.code = error.code().name
        except asyncio.CancelledError:
            self.code = "CANCELLED"
        self.changed.set()


async def main(address: str, count: int, connections: int) -> None:
    own = [("grpc.use_local_subchannel_pool", 1), ("grpc.max_receive_message_length", 1 << 20)]
    channels = [grpc.aio.insecure_channel(address, options=own) for _ in range(connections)]
    started = time.monotonic()
    streams = [
        Stream(
            health_pb2_grpc.HealthStub(channels[i % connections]).Watch(
                health_pb2.HealthCheckRequest(service=""), wait_for_ready=True
            )
        )
        for i in range(count)
    ]
    tasks = [asyncio.ensure_future(stream.follow()) for stream in streams]

    async def first(stream: Stream) -> None:
        while stream.latest is None and stream.code is None:
            stream.changed.clear()
            await stream.changed.wait()

    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.gather(*(first(s) for s in streams)), 120)
    failed: dict[str, int] = {}
    for stream in streams:
        if stream.latest is None:
            code = stream.code or "NO_STATUS"
            failed[code] = failed.get(code, 0) + 1
    opened = count - sum(failed.values())
    print(
        json.dumps({"opened": opened, "failed": failed, "first_all_s": time.monotonic() - started})
    )
    sys.stdout.flush()

    loop = asyncio.get_running_loop()
    while line := await loop.run_in_executor(None, sys.stdin.readline):
        command = line.split()
        if command[:1] == ["expect"]:
            status, seconds = Status.Value(command[1]), float(command[2])
            cancel = int(command[3]) if len(command) > 3 else 0
            alive = [s for s in streams if s.latest is not None and s.code is None]
            for stream in alive[:cancel]:
                stream.call.cancel()
            waiting = alive[cancel:]

            async def settled(stream: Stream, status: int = status) -> None:
                while stream.latest != status and stream.code is None:
                    stream.changed.clear()
                    await stream.changed.wait()

            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.gather(*(settled(s) for s in waiting)), seconds)
            arrivals = [s.seen_at[status] for s in waiting if s.latest == status]
            for stream in waiting:
                stream.seen_at.clear()
            print(json.dumps({"arrivals": arrivals, "missing": len(waiting) - len(arrivals)}))
            sys.stdout.flush()
        elif command[:1] == ["quit"]:
            break
    for task in tasks:
        task.cancel()
    for channel in channels:
        await channel.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3])))
