"""`petsage.v1.SmokeService`: the instance's overall status and every dependency check, as a
deployment pipeline asks for them after a rollout."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from concurrent import futures
from typing import TYPE_CHECKING

import grpc

from petsage_grpc import __version__
from petsage_grpc._gen.petsage.v1 import smoke_pb2, smoke_pb2_grpc
from petsage_grpc.health import OVERALL, SERVING
from petsage_grpc.monitor import HealthMonitor
from petsage_grpc.values import first_and_more

if TYPE_CHECKING:
    from petsage_grpc.checks.runner import CheckRunner
    from petsage_grpc.tls import ServerTLS

SERVICE_NAME = smoke_pb2.DESCRIPTOR.services_by_name["SmokeService"].full_name

OK_MESSAGE = "PetSage services are running smoothly!"

DEADLINE_MARGIN = 0.05
"""Seconds kept back from the call's deadline, to answer in time after a fresh run of checks."""

RECENT_CHANGES = 20
"""How many of the latest transitions SmokeTest returns."""

FRESH_RUN_LIMIT = 30.0
"""How long a fresh run of checks may take when the call has no deadline, in seconds."""


def instance_name() -> str:
    """This instance's name: its pod name (POD_NAME, from the downward API), else the host name."""
    return os.environ.get("POD_NAME", "").strip() or socket.gethostname()


def verdict(
    monitor: HealthMonitor, tls: ServerTLS | None = None
) -> tuple[smoke_pb2.SmokeStatus, str]:
    """The overall status and its message, from the monitor's state as it stands (and the
    served certificate's expiry, with `tls`)."""
    if monitor.state.is_shutdown:
        return smoke_pb2.SMOKE_STATUS_FAILING, "PetSage is shutting down"
    problem = monitor.readiness_problem()
    if problem:
        return smoke_pb2.SMOKE_STATUS_FAILING, f"PetSage is not ready: {problem}"
    if monitor.state.get(OVERALL) != SERVING:
        return smoke_pb2.SMOKE_STATUS_FAILING, "PetSage is not serving"
    degraded = [
        f"{service} NOT_SERVING: {problem}"
        for service in monitor.services
        if (problem := monitor.problem(service))
    ]
    if optional := monitor.failing_summary(required=False):
        degraded.append(optional)
    if tls is not None and (expiring := tls.expiry_problem()):
        degraded.append(expiring)
    if degraded:
        return smoke_pb2.SMOKE_STATUS_DEGRADED, f"PetSage is degraded: {first_and_more(degraded)}"
    return smoke_pb2.SMOKE_STATUS_OK, OK_MESSAGE


def check_result(runner: CheckRunner, now: float) -> smoke_pb2.CheckResult:
    spec = runner.spec
    result = smoke_pb2.CheckResult(
        name=spec.name,
        kind=spec.kind,
        required=spec.required,
        passing=runner.is_passing(now),
        last_error=runner.why_failing(now) or runner.last_error,
    )
    if runner.last_latency is not None:
        result.last_latency.FromNanoseconds(int(runner.last_latency * 1e9))
    if runner.last_run_time is not None:
        result.last_run_time.FromNanoseconds(int(runner.last_run_time * 1e9))
    if runner.last_change_time is not None:
        result.last_change_time.FromNanoseconds(int(runner.last_change_time * 1e9))
    return result


class SmokeServicer(smoke_pb2_grpc.SmokeServiceServicer):
    """Answers SmokeTest from the monitor's state; runs the checks only when asked to."""

    def __init__(
        self,
        monitor: HealthMonitor,
        started: float | None = None,
        *,
        loop: asyncio.AbstractEventLoop,
        version: str = __version__,
        instance: str | None = None,
        tls: ServerTLS | None = None,
    ) -> None:
        """`started` is when serving began, on the monotonic clock (default: now); `version` and
        `instance` are what SmokeTest reports (default: the package's and `instance_name()`);
        `tls`, the served certificate, whose coming expiry degrades the verdict; `loop`, the
        event loop the monitor's checks run on (a fresh run is handed to it, bounded by the
        call's deadline)."""
        self._loop = loop
        self._monitor = monitor
        self._started = time.monotonic() if started is None else started
        self._start_time = time.time() - (time.monotonic() - self._started)
        self._version = version
        self._instance = instance_name() if instance is None else instance
        self._tls = tls

    def SmokeTest(
        self, request: smoke_pb2.SmokeTestRequest, context: grpc.ServicerContext
    ) -> smoke_pb2.SmokeTestResponse:
        """On one of grpc's pool threads: a fresh run of the checks happens on their loop."""
        if request.run_checks:
            remaining = context.time_remaining()  # about 9e18 s for a call without a deadline
            limit = FRESH_RUN_LIMIT if remaining is None else min(remaining, FRESH_RUN_LIMIT)
            budget = limit - DEADLINE_MARGIN
            if budget > 0:
                running = asyncio.run_coroutine_threadsafe(
                    self._monitor.run_checks(timeout=budget), self._loop
                )
                with contextlib.suppress(futures.TimeoutError, RuntimeError):
                    running.result(budget + DEADLINE_MARGIN / 2)
        return self._answer()

    def _answer(self) -> smoke_pb2.SmokeTestResponse:
        """SmokeTest's answer from the results as they stand."""
        status, message = verdict(self._monitor, self._tls)
        now = time.monotonic()
        response = smoke_pb2.SmokeTestResponse(
            status=status,
            message=message,
            version=self._version,
            checks=[check_result(runner, now) for runner in self._monitor.runners],
            instance=self._instance,
        )
        response.uptime.FromNanoseconds(int((now - self._started) * 1e9))
        response.start_time.FromNanoseconds(int(self._start_time * 1e9))
        history = self._monitor.state.history
        if history is not None:
            for change in history.recent(RECENT_CHANGES):
                transition = response.recent_changes.add(
                    kind=change.kind,
                    name=change.name,
                    old_state=change.old,
                    new_state=change.new,
                    reason=change.reason,
                )
                transition.time.FromNanoseconds(int(change.time * 1e9))
        return response
