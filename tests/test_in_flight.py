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


async def waiting(in_flight: InFlight) -> None:
    """Until `quiet()` waits for the next RPC to begin or end (polled, with a deadline)."""
    deadline = asyncio.get_running_loop().time() + 5
    while not in_flight._waiters:
        assert asyncio.get_running_loop().time() < deadline, "quiet() never waited"
        await asyncio.sleep(0)


def test_quiet_waits_for_an_rpc_in_flight():
    async def scenario() -> bool:
        in_flight = InFlight()
        in_flight.begin(CHECK)
        quiet = asyncio.ensure_future(in_flight.quiet(WATCH, 0.01))
        await waiting(in_flight)  # it waits, and only the RPC's end can wake it
        return quiet.done()

    assert asyncio.run(scenario()) is False


def test_quiet_returns_after_the_rpc_ends_on_another_thread():
    async def scenario() -> None:
        in_flight = InFlight()
        in_flight.begin(CHECK)
        quiet = asyncio.ensure_future(in_flight.quiet(WATCH, 0.01))
        await waiting(in_flight)
        threading.Thread(target=in_flight.end, args=(CHECK,)).start()
        await asyncio.wait_for(quiet, 5)

    asyncio.run(scenario())


def test_quiet_starts_over_when_an_rpc_comes_and_goes_within_the_quiet_time():
    # The quiet time itself is what is under test here, so its sleeps are the behaviour's own:
    # an RPC half-way through a quiet second restarts it, so at 1.25 s it has not yet ended.
    async def scenario() -> tuple[bool, bool]:
        loop = asyncio.get_running_loop()
        in_flight = InFlight()
        started = loop.time()
        quiet = asyncio.ensure_future(in_flight.quiet(WATCH, 1.0))
        await asyncio.sleep(0.5)
        in_flight.begin(CHECK)
        in_flight.end(CHECK)
        await asyncio.sleep(1.25 - (loop.time() - started))
        early = quiet.done()
        await asyncio.wait_for(quiet, 5)
        return early, quiet.done()

    assert asyncio.run(scenario()) == (False, True)
