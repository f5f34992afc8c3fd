"""HealthMonitor's readiness rule on its own: each test records the checks' results itself, moves
its own clock, and reads the statuses from the HealthState. The tests run on an event loop that
never turns, so the checks' own loops never run a check."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Coroutine
from typing import Any

from petsage_grpc.checks.spec import CheckSpec
from petsage_grpc.health import NOT_SERVING, SERVING, HealthState
from petsage_grpc.monitor import HealthMonitor
from tests.test_check_runner import Clock

SERVICE = "example.Orders"


def on_loop(test: Callable[[], Coroutine[Any, Any, None]]) -> Callable[[], None]:
    @functools.wraps(test)
    def run() -> None:
        asyncio.run(test())

    return run


class Monitor:
    """A started monitor of the given checks (name: required), hosting SERVICE."""

    def __init__(self, **checks: bool) -> None:
        self.clock = Clock()
        self.state = HealthState()
        specs = [
            CheckSpec(name=name, kind="tcp", target="127.0.0.1:1", required=required, interval=1)
            for name, required in checks.items()
        ]
        self.monitor = HealthMonitor(self.state, specs, services=[SERVICE], clock=self.clock)
        self.monitor.start()

    def record(self, name: str, error: str | None = None) -> None:
        runner = next(r for r in self.monitor.runners if r.spec.name == name)
        runner.record(error, 0.001)

    def status(self, service: str = "readiness") -> int | None:
        return self.state.get(service)


@on_loop
async def test_without_checks_readiness_is_serving_at_once():
    assert Monitor().status() == SERVING


@on_loop
async def test_readiness_waits_for_the_first_result_of_a_required_check():
    assert Monitor(db=True).status() == NOT_SERVING


@on_loop
async def test_readiness_needs_no_result_of_an_optional_check():
    assert Monitor(cache=False).status() == SERVING


@on_loop
async def test_passing_required_check_makes_readiness_serving():
    monitor = Monitor(db=True)
    monitor.record("db")
    assert monitor.status() == SERVING


@on_loop
async def test_failing_required_check_takes_readiness_down():
    monitor = Monitor(db=True)
    monitor.record("db")
    for _ in range(3):
        monitor.record("db", "connection refused")
    assert monitor.status() == NOT_SERVING


@on_loop
async def test_failing_optional_check_keeps_readiness_serving():
    monitor = Monitor(cache=False)
    monitor.record("cache", "connection refused")
    assert monitor.status() == SERVING


@on_loop
async def test_hosted_services_follow_readiness():
    monitor = Monitor(db=True)
    monitor.record("db")
    assert [monitor.status(name) for name in ("", SERVICE)] == [SERVING, SERVING]


@on_loop
async def test_liveness_ignores_every_check():
    monitor = Monitor(db=True)
    monitor.record("db", "connection refused")
    assert monitor.status("liveness") == SERVING


@on_loop
async def test_stale_result_takes_readiness_down_at_the_next_evaluation():
    monitor = Monitor(db=True)
    monitor.record("db")
    monitor.clock.now += 10
    monitor.monitor.evaluate()  # as the watchdog does each second
    assert monitor.monitor.readiness_problem() == (
        "required check 'db' fails: no result for over 4s"
    )


@on_loop
async def test_maintenance_takes_readiness_down():
    monitor = Monitor()
    monitor.monitor.enter_maintenance()
    assert monitor.status() == NOT_SERVING


@on_loop
async def test_maintenance_keeps_liveness():
    monitor = Monitor()
    monitor.monitor.enter_maintenance()
    assert monitor.status("liveness") == SERVING


@on_loop
async def test_leaving_maintenance_follows_the_checks_again():
    monitor = Monitor(db=True)
    monitor.record("db")
    monitor.monitor.enter_maintenance()
    monitor.monitor.leave_maintenance()
    assert monitor.status() == SERVING


@on_loop
async def test_service_set_by_the_application_stops_following_readiness():
    monitor = Monitor(db=True)
    monitor.monitor.set(SERVICE, SERVING)
    assert [monitor.status(), monitor.status(SERVICE)] == [NOT_SERVING, SERVING]


@on_loop
async def test_readiness_problem_names_the_first_failing_check():
    monitor = Monitor(a=True, b=True, c=True)
    for name in ("a", "b", "c"):
        monitor.record(name, "connection refused")
    assert monitor.monitor.readiness_problem() == (
        "required check 'a' fails: connection refused (and 2 more)"
    )


@on_loop
async def test_closed_monitor_takes_every_service_down():
    monitor = Monitor()
    await monitor.monitor.close()
    assert set(monitor.state.statuses().values()) == {NOT_SERVING}
