"""An application on grpc's thread-pool server (most Python gRPC services) adds PetSage health:
SyncHealthServicer in place of grpcio-health-checking's HealthServicer, the same HealthState and
HealthMonitor as the asyncio servers use, the monitor's checks on an event loop of their own.

The application's service `example.Orders` follows readiness, which follows its `database`
check. SIGUSR1 enters maintenance, SIGUSR2 leaves it, SIGTERM stops.

Run: python examples/embedded_sync_health.py [PORT]
"""

from __future__ import annotations

import asyncio
import signal
import sys
import threading
from concurrent import futures

import grpc
from grpc_health.v1 import health_pb2_grpc

from petsage_grpc.checks.spec import CheckSpec
from petsage_grpc.health import HealthState
from petsage_grpc.monitor import HealthMonitor
from petsage_grpc.sync_health import SyncHealthServicer


async def database_ok() -> bool:
    """The application's own check: raise, or return False, when the database is unusable."""
    return True


def main(port: int) -> None:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=10))
    # ... the application adds its own services here, e.g. add_OrdersServicer_to_server(...)

    state = HealthState()
    health = SyncHealthServicer(state)
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    monitor = HealthMonitor(state, services=["example.Orders"])
    monitor.add_check(CheckSpec(name="database", kind="python", target=database_ok, interval=5))

    checks = asyncio.new_event_loop()  # the monitor and its checks live here
    threading.Thread(target=checks.run_forever, name="checks", daemon=True).start()

    port = server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    checks.call_soon_threadsafe(monitor.start)
    print(f"serving on 127.0.0.1:{port}", file=sys.stderr, flush=True)

    stop = threading.Event()
    signal.signal(signal.SIGUSR1, lambda *_: checks.call_soon_threadsafe(monitor.enter_maintenance))
    signal.signal(signal.SIGUSR2, lambda *_: checks.call_soon_threadsafe(monitor.leave_maintenance))
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    stop.wait()
    asyncio.run_coroutine_threadsafe(monitor.close(), checks).result(10)  # all NOT_SERVING
    state.end_watches()
    server.stop(grace=5).wait()
    health.close()  # its sender threads
    checks.call_soon_threadsafe(checks.stop)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 50052)
