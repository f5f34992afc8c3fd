"""An application with its own grpc.aio server adds PetSage health to it in a few lines.

The application's service `example.Orders` follows readiness, which follows the application's
own `database` check. SIGUSR1 enters maintenance (readiness NOT_SERVING, liveness SERVING),
SIGUSR2 leaves it, SIGTERM stops.

Run: python examples/embedded_health.py [PORT]
"""

from __future__ import annotations

import asyncio
import signal
import sys

import grpc
from grpc_health.v1 import health_pb2_grpc

from petsage_grpc.checks.spec import CheckSpec
from petsage_grpc.health import HealthServicer, HealthState
from petsage_grpc.monitor import HealthMonitor


async def database_ok() -> bool:
    """The application's own check: raise, or return False, when the database is unusable."""
    return True


async def main(port: int) -> None:
    server = grpc.aio.server()
    # ... the application adds its own services here, e.g. add_OrdersServicer_to_server(...)

    state = HealthState()
    health_pb2_grpc.add_HealthServicer_to_server(HealthServicer(state), server)
    monitor = HealthMonitor(state, services=["example.Orders"])
    monitor.add_check(CheckSpec(name="database", kind="python", target=database_ok, interval=5))

    port = server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    monitor.start()
    print(f"serving on 127.0.0.1:{port}", file=sys.stderr, flush=True)

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGUSR1, monitor.enter_maintenance)
    loop.add_signal_handler(signal.SIGUSR2, monitor.leave_maintenance)
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await monitor.close()  # everything NOT_SERVING, checks stop
    await server.stop(grace=5)


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 50052))
