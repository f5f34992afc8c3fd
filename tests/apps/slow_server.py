"""A PetSage server that also hosts `petsage.test.Slow/Sleep`, an RPC that takes as long as its
request says (seconds, as ASCII), for tests of what a shutdown does to RPCs in flight.

Usage: python -m tests.apps.slow_server GRACE_PERIOD DRAIN_DELAY
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time

os.environ.setdefault("GRPC_VERBOSITY", "NONE")

import grpc

from petsage_grpc.config import Config
from petsage_grpc.server import Server

log = logging.getLogger("slow")


def sleep(request: bytes, context: grpc.ServicerContext) -> bytes:
    seconds = float(request.decode())
    log.info("sleep started")
    # The work of the RPC under test, not a wait of the test; it ends early once cancelled.
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and context.is_active():
        time.sleep(0.01)
    return b"slept"


def main() -> int:
    logging.basicConfig(level="INFO", format="%(levelname)s %(name)s: %(message)s")
    handler = grpc.method_handlers_generic_handler(
        "petsage.test.Slow", {"Sleep": grpc.unary_unary_rpc_method_handler(sleep)}
    )
    config = Config(
        host="127.0.0.1", port=0, grace_period=float(sys.argv[1]), drain_delay=float(sys.argv[2])
    )
    return asyncio.run(Server(config, services=[handler]).serve())


if __name__ == "__main__":
    sys.exit(main())
