"""HealthMonitor: the health model. It runs the dependency checks and writes, into a HealthState,
the status of the service names with a fixed meaning:

- `liveness`: SERVING while the process can answer; it never depends on other systems and is
  NOT_SERVING only once the server is shutting down (`close()`).
- `readiness` and `""`: SERVING only while every required check that is not scoped to services
  passes and the monitor is not in maintenance (`enter_maintenance()` until
  `leave_maintenance()`) or closed.
- every other service the server hosts or declares (`petsage.v1.SmokeService`, ...): SERVING
  while readiness is and every required check scoped to it passes, until the application sets
  its status itself with `set()`. A check scoped to services (`services=[...]`) so moves only
  those, never readiness: a dependency of one service must not take the whole pod out of load
  balancing.

Checks write, RPCs read: nothing here runs on a request path except `run_checks()`, which a
SmokeTest asks for explicitly.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from petsage_grpc.checks.spec import CheckSpec, SpecError
from petsage_grpc.health import NOT_SERVING, OVERALL, SERVING, HealthState, ServingStatus
from petsage_grpc.values import first_and_more

if TYPE_CHECKING:  # imported when the first check is added: many servers have none
    from petsage_grpc.checks.runner import CheckRunner, Clock

log = logging.getLogger(__name__)

LIVENESS = "liveness"
READINESS = "readiness"
RESERVED = (LIVENESS, READINESS, OVERALL)

WATCHDOG_INTERVAL = 1.0
"""How often stale results are looked for, in seconds."""


def _applies(spec: CheckSpec, service: str) -> bool:
    """Whether a check counts for `service`: an unscoped one for all, a scoped one for its own."""
    return not spec.services or service in spec.services


class CheckSetupError(ValueError):
    """A check cannot be set up (such as a python target that does not import)."""


class HealthMonitor:
    """Runs checks and keeps liveness, readiness and the hosted services' statuses true."""

    def __init__(
        self,
        state: HealthState,
        checks: Iterable[CheckSpec] = (),
        services: Iterable[str] = (),
        *,
        clock: Clock = time.monotonic,
        fresh_run_reuse: float = 1.0,
    ) -> None:
        """`clock` (seconds, monotonic) tells the checks' results' age: tests pass their own.
        `fresh_run_reuse`: `run_checks()` reuses a check's result younger than this."""
        self.state = state
        self._clock = clock
        self._fresh_run_reuse = fresh_run_reuse
        self._runners: list[CheckRunner] = []
        self._followers = [READINESS, OVERALL]
        self._pinned: set[str] = set()
        self._maintenance = False
        self._started = False
        self._serving: dict[str, bool] = {}  # each follower's status as last set
        for service in services:
            self.add_service(service)
        self._watchdog: asyncio.Task[None] | None = None
        for spec in checks:
            self.add_check(spec)

    @property
    def runners(self) -> Sequence[CheckRunner]:
        """The checks, in the order they were added."""
        return tuple(self._runners)

    @property
    def in_maintenance(self) -> bool:
        return self._maintenance

    @property
    def services(self) -> Sequence[str]:
        """The services that follow readiness and their scoped checks."""
        return tuple(s for s in self._followers if s not in RESERVED)

    def add_service(self, service: str) -> None:
        """Register a service in health: it follows readiness and the checks scoped to it (an
        application's own service, or one a sidecar answers for)."""
        if service in RESERVED:
            raise ValueError(f"{service!r} is derived from the checks; it cannot be added")
        if service in self._followers:
            return
        self._followers.append(service)
        if self._started:
            self.evaluate(force=True)

    def add_check(self, spec: CheckSpec) -> None:
        """Add a dependency check; it runs at once if the monitor has started.

        Raises CheckSetupError if its name is taken, it is scoped to a service the monitor does
        not know, or it cannot be set up (a python target that does not import, ...).
        """
        from petsage_grpc.checks.runner import CheckRunner

        if any(r.spec.name == spec.name for r in self._runners):
            raise CheckSetupError(f"check {spec.name!r}: the name is taken")
        unknown = [s for s in spec.services if s not in self._followers]
        if unknown:
            raise CheckSetupError(
                f"check {spec.name!r}: services: {unknown[0]!r} is not a service of this server"
                " (declare it with --service)"
            )
        try:
            runner = CheckRunner(
                spec,
                self._on_result,
                clock=self._clock,
                reuse_for=self._fresh_run_reuse,
                history=self.state.history,
            )
        except SpecError as exc:
            raise CheckSetupError(f"check {spec.name!r}: {exc}") from None
        self._runners.append(runner)
        if self._started:
            runner.start()
            self.evaluate()

    def start(self) -> None:
        """Register every service, set liveness SERVING, and start the checks. Call on the loop."""
        self._started = True
        if self.state.is_shutdown:  # a state that served before: accept statuses again
            self.state.resume()
        self.state.set(LIVENESS, SERVING)
        # Not ready until the required checks prove otherwise; their first results follow.
        self.evaluate(force=True)
        for runner in self._runners:
            runner.start()
        self._watchdog = asyncio.create_task(self._watch_for_stale_results(), name="watchdog")

    async def close(self) -> None:
        """The server is going away: every service NOT_SERVING, liveness too, for good; the
        checks stop. Every status is NOT_SERVING before the first await."""
        self.state.shutdown()
        tasks = [self._watchdog] if self._watchdog else []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*(runner.stop() for runner in self._runners))

    def enter_maintenance(self) -> None:
        """Enter maintenance: readiness and the services that follow it go NOT_SERVING; liveness
        stays SERVING, so Kubernetes takes the pod out of load balancing without restarting it."""
        self._maintenance = True
        self.evaluate()

    def leave_maintenance(self) -> None:
        """Leave maintenance: readiness follows the checks again."""
        self._maintenance = False
        self.evaluate()

    def set(self, service: str, status: ServingStatus) -> None:
        """Set a hosted service's status; from now on it no longer follows readiness."""
        if service in RESERVED:
            raise ValueError(f"{service!r} is derived from the checks; it cannot be set")
        self._pinned.add(service)
        self.state.set(service, status, "set by the application")

    async def run_checks(self, timeout: float) -> None:
        """Run every check now (joining runs in flight); return within `timeout` seconds."""
        runs = [runner.run_now() for runner in self._runners]
        if runs and timeout > 0:
            await asyncio.wait([asyncio.shield(run) for run in runs], timeout=timeout)

    def failing(
        self, *, required: bool, service: str | None = None
    ) -> list[tuple[CheckRunner, str]]:
        """The checks, required or optional, that do not pass now, each with why: every one, or
        with `service` those that apply to it (readiness and "": the unscoped ones)."""
        now = self._clock()
        return [
            (runner, runner.why_failing(now))
            for runner in self._runners
            if runner.spec.required == required
            and (service is None or _applies(runner.spec, service))
            and not runner.is_passing(now)
        ]

    def readiness_problem(self) -> str:
        """Why readiness is NOT_SERVING (empty when it is SERVING)."""
        return self.problem(READINESS)

    def problem(self, service: str) -> str:
        """Why `service` (readiness, "", or a follower) is NOT_SERVING; empty when SERVING."""
        if self._maintenance:
            return "in maintenance"
        return self.failing_summary(required=True, service=service)

    def failing_summary(self, *, required: bool, service: str | None = None) -> str:
        """The first required (or optional) check that fails, and how many more do; empty when
        none fails: `required check 'db' fails: connection refused (and 1 more)`. With
        `service`, only the checks that apply to it."""
        kind = "required" if required else "optional"
        return first_and_more(
            [
                f"{kind} check {runner.spec.name!r} fails: {why}"
                for runner, why in self.failing(required=required, service=service)
            ]
        )

    def _on_result(self, runner: CheckRunner) -> None:
        self.evaluate()

    def evaluate(self, *, force: bool = False) -> None:
        """Look at the checks' results now, and set readiness and every follower to match. Each
        result does this, and a watchdog each second, for results that went stale. `force` sets
        every status, changed or not."""
        if not self._started:
            return
        for service in self._followers:
            problem = self.problem(service)
            serving = not problem
            if not force and self._serving.get(service) == serving:
                continue
            changed = service in self._serving
            self._serving[service] = serving
            if service not in self._pinned:
                reason = problem or "every required check passes"
                self.state.set(service, SERVING if serving else NOT_SERVING, reason)
            if changed and not self.state.is_shutdown and self._logs_changes_of(service):
                self._log_change(service, serving, problem)

    def _logs_changes_of(self, service: str) -> bool:
        """Readiness, and the services with checks of their own; "" and the rest only echo it."""
        return service == READINESS or any(service in r.spec.services for r in self._runners)

    def _log_change(self, service: str, serving: bool, problem: str) -> None:
        fields: dict[str, object] = {
            "event": "status_changed",
            "service": service,
            "old": "NOT_SERVING" if serving else "SERVING",
            "new": "SERVING" if serving else "NOT_SERVING",
        }
        failing = self.failing(required=True, service=service)
        if failing and not self._maintenance:
            fields.update(check=failing[0][0].spec.name, error=failing[0][1])
        if serving:
            log.info("%s SERVING: every required check passes", service, extra=fields)
        else:
            log.warning("%s NOT_SERVING: %s", service, problem, extra=fields)

    async def _watch_for_stale_results(self) -> None:
        while True:
            await asyncio.sleep(WATCHDOG_INTERVAL)
            self.evaluate()
