"""InFlight on its own: counts by method, and the stop's wait for "only Watch streams left"."""

from __future__ import annotations

import asyncio
import threading

from petsage_grpc.inflight import InFlight

WATCH = ("grpc.health.v1.Health", "Watch", "server_stream")
CHECK = ("grpc.health.v1.Health", "Check", "unary")


def test_counts_rpcs_by_method():
    in_flight = InFlight()
    in_flight.begin(CHECK)
    in_flight.begin(CHECK)
    in_flight.begin(WATCH)
    in_flight.end(CHECK)
    assert in_flight.counts() == {CHECK: 1, WATCH: 1}


def test_quiet_returns_while_only_the_ignored_method_is_in_flight():
    async def scenario() -> None:
        in_flight = InFlight()
        in_flight.begin(WATCH)
        await asyncio.wait_for(in_flight.quiet(WATCH, 0.01), 5)

    asyncio.run(scenario())


def test_quiet_waits_for_an_rpc_in_flight():
    async def scenario() -> bool:
        in_flight = InFlight()
        in_flight.begin(CHECK)
        quiet = asyncio.ensure_future(in_flight.quiet(WATCH, 0.01))
        await asyncio.sleep(0.1)
        return quiet.done()

    assert asyncio.run(scenario()) is False


def test_quiet_returns_after_the_rpc_ends_on_another_thread():
    async def scenario() -> None:
        in_flight = InFlight()
        in_flight.begin(CHECK)
        quiet = asyncio.ensure_future(in_flight.quiet(WATCH, 0.01))
        await asyncio.sleep(0.05)
        threading.Thread(target=in_flight.end, args=(CHECK,)).start()
        await asyncio.wait_for(quiet, 5)

    asyncio.run(scenario())


def test_quiet_starts_over_when_an_rpc_begins_within_the_quiet_time():
    async def scenario() -> bool:
        in_flight = InFlight()
        quiet = asyncio.ensure_future(in_flight.quiet(WATCH, 0.2))
        await asyncio.sleep(0.05)
        in_flight.begin(CHECK)
        await asyncio.sleep(0.3)
        return quiet.done()

    assert asyncio.run(scenario()) is False
