"""CheckRunner: runs one dependency check every interval, bounded by its timeout, and keeps its
result after the failure and success thresholds, as Kubernetes counts probe results.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from petsage_grpc.checks.checkers import make_checker
from petsage_grpc.checks.spec import CheckSpec
from petsage_grpc.values import format_seconds

log = logging.getLogger(__name__)

STOP_WAIT = 1.0
"""How long `stop()` waits for cancelled runs to end, in seconds."""

Clock = Callable[[], float]
"""Seconds on a monotonic clock (`time.monotonic`, or a test's own)."""


def describe(error: BaseException) -> str:
    """One line saying why a check failed."""
    text = str(error) or type(error).__name__
    if isinstance(error, OSError) and error.strerror:
        text = error.strerror
    return text.splitlines()[0] if text else type(error).__name__


class CheckRunner:
    """One check: its loop, its latest result, and whether it counts as passing.

    A check starts failing (not yet proven, as a Kubernetes readiness probe starts) and changes
    only after `success_threshold` consecutive successes or `failure_threshold` consecutive
    failures. A result older than `spec.stale_after` counts as failing, whatever it said.
    `is_passing(now)` is the one answer to "does it pass".
    """

    def __init__(
        self,
        spec: CheckSpec,
        on_result: Callable[[CheckRunner], None],
        *,
        clock: Clock = time.monotonic,
    ) -> None:
        self.spec = spec
        self.last_error = ""
        self.last_latency: float | None = None
        self.last_run_time: float | None = None  # wall clock, for people
        self.last_change_time: float | None = None  # wall clock, for people
        self._clock = clock
        self._checker = make_checker(spec)
        self._on_result = on_result
        self._passing = False  # after the thresholds, however old the result
        self._fresh_until: float | None = None  # on the clock
        self._successes = 0
        self._failures = 0
        self._run: asyncio.Future[None] | None = None
        self._checking: asyncio.Future[None] | None = None  # the checker's own task
        self._loop_task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Begin running every interval, the first run at once. Call on the event loop."""
        self._loop_task = asyncio.create_task(self._loop(), name=f"check {self.spec.name}")

    async def stop(self) -> None:
        """Stop the loop and any run in flight, and release the checker's resources."""
        tasks = [t for t in (self._loop_task, self._run, self._checking) if t and not t.done()]
        for task in tasks:
            task.cancel()
        if tasks:  # a checker that ignores cancellation is not waited for long
            await asyncio.wait(tasks, timeout=STOP_WAIT)
        await self._checker.close()

    def run_now(self) -> asyncio.Future[None]:
        """Run the check now, or join the run already in flight; the future ends with it."""
        if self._run is None or self._run.done():
            self._run = asyncio.ensure_future(self._run_once())
        return self._run

    @property
    def consecutive_failures(self) -> int:
        """Failed runs since the last success."""
        return self._failures

    def is_passing(self, now: float | None = None) -> bool:
        """Passing after the thresholds, and the result not stale at `now` (default: the clock)."""
        now = self._clock() if now is None else now
        return self._passing and self._fresh_until is not None and now < self._fresh_until

    def why_failing(self, now: float | None = None) -> str:
        """Why the check does not pass at `now` (empty when it does)."""
        now = self._clock() if now is None else now
        if self.is_passing(now):
            return ""
        if self._fresh_until is None:
            return "no result yet"
        if now >= self._fresh_until:
            return f"no result for over {format_seconds(self.spec.stale_after)}"
        return self.last_error

    def record(self, error: str | None, latency: float) -> None:
        """Count one result: None for a success, else why it failed."""
        now = time.time()
        self.last_run_time = now
        self.last_latency = latency
        self.last_error = error or ""
        self._fresh_until = self._clock() + self.spec.stale_after
        if error is None:
            self._successes, self._failures = self._successes + 1, 0
        else:
            self._successes, self._failures = 0, self._failures + 1
        was = self._passing
        if not was and self._successes >= self.spec.success_threshold:
            self._passing = True
        elif was and self._failures >= self.spec.failure_threshold:
            self._passing = False
        if self._passing != was or self.last_change_time is None:
            self.last_change_time = now
            self._log_change(was)
        self._on_result(self)

    async def _loop(self) -> None:
        while True:
            await asyncio.shield(self.run_now())
            await asyncio.sleep(self.spec.interval)

    async def _run_once(self) -> None:
        if self._checking is not None and not self._checking.done():
            self.record("the previous run is still going, past its timeout", 0.0)
            return
        started = time.monotonic()
        self._checking = checking = asyncio.ensure_future(self._checker.run())
        done, _ = await asyncio.wait((checking,), timeout=self.spec.timeout)
        latency = time.monotonic() - started
        if not done:
            # Cancel it, but do not wait: a checker that ignores cancellation must not stall us.
            checking.cancel()
            checking.add_done_callback(_consume)
            self.record(f"timed out after {format_seconds(self.spec.timeout)}", latency)
        elif (error := checking.exception()) is not None:
            self.record(describe(error), latency)
        else:
            self.record(None, latency)

    def _log_change(self, was: bool) -> None:
        spec = self.spec
        fields = {
            "event": "check_changed",
            "check": spec.name,
            "kind": spec.kind,
            "required": spec.required,
            "passing": self._passing,
            "error": self.last_error,
        }
        if self._passing:
            log.info("check %r (%s) passes", spec.name, spec.kind, extra=fields)
        elif was:
            log.warning(
                "check %r (%s) fails after %d failures: %s",
                spec.name,
                spec.kind,
                self._failures,
                self.last_error,
                extra=fields,
            )
        else:
            log.warning(
                "check %r (%s) fails: %s", spec.name, spec.kind, self.last_error, extra=fields
            )


def _consume(future: asyncio.Future[None]) -> None:
    """Read an abandoned run's outcome so asyncio does not report it as never retrieved."""
    with contextlib.suppress(asyncio.CancelledError, Exception):
        future.exception()
