"""CheckRunner: runs one dependency check every interval, bounded by its timeout, and keeps its
result after the failure and success thresholds, as Kubernetes counts probe results.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from petsage_grpc.checks.probes import make_probe
from petsage_grpc.checks.spec import CheckSpec

log = logging.getLogger(__name__)

STOP_WAIT = 1.0
"""How long `stop()` waits for cancelled runs to end, in seconds."""


def describe(error: BaseException) -> str:
    """One line saying why a probe failed."""
    text = str(error) or type(error).__name__
    if isinstance(error, OSError) and error.strerror:
        text = error.strerror
    return text.splitlines()[0] if text else type(error).__name__


class CheckRunner:
    """One check: its loop, its latest result, and whether it counts as passing.

    A check starts failing (not yet proven, as a Kubernetes readiness probe starts) and changes
    only after `success_threshold` consecutive successes or `failure_threshold` consecutive
    failures. A result older than `spec.stale_after` counts as failing, whatever it said.
    """

    def __init__(self, spec: CheckSpec, on_result: Callable[[CheckRunner], None]) -> None:
        self.spec = spec
        self.passing = False
        self.last_error = ""
        self.last_latency: float | None = None
        self.last_run_time: float | None = None  # wall clock, for people
        self.last_change_time: float | None = None  # wall clock, for people
        self._probe = make_probe(spec)
        self._on_result = on_result
        self._fresh_until: float | None = None  # monotonic
        self._successes = 0
        self._failures = 0
        self._run: asyncio.Future[None] | None = None
        self._probing: asyncio.Future[None] | None = None  # the probe's own task
        self._loop_task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Begin running every interval, the first run at once. Call on the event loop."""
        self._loop_task = asyncio.create_task(self._loop(), name=f"check {self.spec.name}")

    async def stop(self) -> None:
        """Stop the loop and any run in flight, and release the probe's resources."""
        tasks = [t for t in (self._loop_task, self._run, self._probing) if t and not t.done()]
        for task in tasks:
            task.cancel()
        if tasks:  # a probe that ignores cancellation is not waited for long
            await asyncio.wait(tasks, timeout=STOP_WAIT)
        await self._probe.close()

    def run_now(self) -> asyncio.Future[None]:
        """Run the check now, or join the run already in flight; the future ends with it."""
        if self._run is None or self._run.done():
            self._run = asyncio.ensure_future(self._run_once())
        return self._run

    @property
    def consecutive_failures(self) -> int:
        """Failed runs since the last success."""
        return self._failures

    def is_passing(self, now: float) -> bool:
        """Passing after the thresholds, and the result not stale at monotonic time `now`."""
        return self.passing and self._fresh_until is not None and now < self._fresh_until

    def why_failing(self, now: float) -> str:
        """Why the check does not pass (empty when it does)."""
        if self.is_passing(now):
            return ""
        if self._fresh_until is None:
            return "no result yet"
        if now >= self._fresh_until:
            return f"no result for over {self.spec.stale_after:g}s"
        return self.last_error

    async def _loop(self) -> None:
        while True:
            await asyncio.shield(self.run_now())
            await asyncio.sleep(self.spec.interval)

    async def _run_once(self) -> None:
        if self._probing is not None and not self._probing.done():
            self._record("the previous run is still going, past its timeout", 0.0)
            return
        started = time.monotonic()
        self._probing = probe = asyncio.ensure_future(self._probe.run())
        done, _ = await asyncio.wait((probe,), timeout=self.spec.timeout)
        latency = time.monotonic() - started
        if not done:
            # Cancel it, but do not wait: a probe that ignores cancellation must not stall us.
            probe.cancel()
            probe.add_done_callback(_consume)
            self._record(f"timed out after {self.spec.timeout:g}s", latency)
        elif (error := probe.exception()) is not None:
            self._record(describe(error), latency)
        else:
            self._record(None, latency)

    def _record(self, error: str | None, latency: float) -> None:
        now = time.time()
        self.last_run_time = now
        self.last_latency = latency
        self.last_error = error or ""
        self._fresh_until = time.monotonic() + self.spec.stale_after
        if error is None:
            self._successes, self._failures = self._successes + 1, 0
        else:
            self._successes, self._failures = 0, self._failures + 1
        was = self.passing
        if not was and self._successes >= self.spec.success_threshold:
            self.passing = True
        elif was and self._failures >= self.spec.failure_threshold:
            self.passing = False
        if self.passing != was or self.last_change_time is None:
            self.last_change_time = now
            self._log_change(was)
        self._on_result(self)

    def _log_change(self, was: bool) -> None:
        spec = self.spec
        fields = {
            "event": "check_changed",
            "check": spec.name,
            "kind": spec.kind,
            "required": spec.required,
            "passing": self.passing,
            "error": self.last_error,
        }
        if self.passing:
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
    """Read an abandoned probe's outcome so asyncio does not report it as never retrieved."""
    with contextlib.suppress(asyncio.CancelledError, Exception):
        future.exception()
