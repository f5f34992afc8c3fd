"""CheckRunner: runs one dependency check every interval, bounded by its timeout, and keeps its
result after the failure and success thresholds, as Kubernetes counts probe results. A check that
follows its dependency (grpc: a Watch) is not polled: each status the dependency pushes is its
result at once, and only a broken stream counts toward the failure threshold.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from petsage_grpc.checks.base import CheckFailed, words
from petsage_grpc.checks.checkers import Follower, make_checker
from petsage_grpc.checks.spec import CheckSpec
from petsage_grpc.values import format_seconds

if TYPE_CHECKING:
    from petsage_grpc.history import History

log = logging.getLogger(__name__)

STOP_WAIT = 1.0
"""How long `stop()` waits for cancelled runs to end and the checker to close, in seconds."""

REUSE_FOR = 1.0
"""A run asked for on demand (`run_now`) reuses a result younger than this, in seconds."""

Clock = Callable[[], float]
"""Seconds on a monotonic clock (`time.monotonic`, or a test's own)."""


def describe(error: BaseException, kind: str) -> str:
    """One line saying why a check failed, fit to show callers: for a python check, its own
    message; for the others, words that name no host, address, path or credential."""
    if kind != "python" or isinstance(error, CheckFailed):
        return words(error)
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _detail(error: BaseException) -> str:
    """The exception behind a failure, for the server log only (it may name hosts)."""
    cause = error.__cause__
    if cause is None:
        return ""
    return f"{type(cause).__name__}: {cause}".splitlines()[0]


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
        reuse_for: float = REUSE_FOR,
        history: History | None = None,
    ) -> None:
        """`reuse_for`: a run on demand reuses a result younger than this many seconds.
        `history` records each change of its result."""
        self._history = history
        self.spec = spec
        self.last_error = ""
        self.last_latency: float | None = None
        self.last_run_time: float | None = None  # wall clock, for people
        self.last_change_time: float | None = None  # wall clock, for people
        self._clock = clock
        self._reuse_for = reuse_for
        self._checker = make_checker(spec)
        self._following = False  # the checker follows its dependency now: nothing to run
        self._last_result: float | None = None  # on the clock
        self._first: asyncio.Future[None] | None = None  # run_now's wait for a first push
        self._on_result = on_result
        self._passing = False  # after the thresholds, however old the result
        self._fresh_until: float | None = None  # on the clock
        self._successes = 0
        self._failures = 0
        self._run: asyncio.Future[None] | None = None
        self._checking: asyncio.Future[None] | None = None  # the checker's own task
        self._loop_task: asyncio.Task[None] | None = None
        self._stopped = False  # nothing runs once stopped: the checker's resources are released

    def start(self) -> None:
        """Begin following the dependency, or running every interval, the first run at once.
        Call on the event loop."""
        self._stopped = False
        self._loop_task = asyncio.create_task(self._loop(), name=f"check {self.spec.name}")

    async def stop(self) -> None:
        """Stop the loop and any run in flight, and release the checker's resources, within
        about STOP_WAIT seconds whatever the checker does. A later `run_now()` runs nothing."""
        self._stopped = True
        if self._first is not None and not self._first.done():  # no first push will come now
            self._first.set_result(None)
        tasks = [t for t in (self._loop_task, self._run, self._checking) if t and not t.done()]
        for task in tasks:
            task.cancel()
        if tasks:  # a checker that ignores cancellation is not waited for long
            await asyncio.wait(tasks, timeout=STOP_WAIT)
        closing = asyncio.ensure_future(self._checker.close())
        done, _ = await asyncio.wait((closing,), timeout=STOP_WAIT)
        if not done:
            closing.cancel()
        closing.add_done_callback(_consume)

    def run_now(self) -> asyncio.Future[None]:
        """A fresh result: join the run in flight, reuse a result younger than `reuse_for`, or
        run the check now; the future ends when the result is in. A followed check's result is
        always fresh: there is nothing to run. Once stopped, nothing runs."""
        last = self._last_result
        fresh = last is not None and self._clock() - last < self._reuse_for
        if self._run is None or self._run.done():
            if self._following and last is None and not self._stopped:  # the first is on its way
                self._first = self._first or asyncio.get_running_loop().create_future()
                return self._first
            # Stopped (the server is going away), its last result stands.
            if self._following or fresh or self._stopped:
                done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
                done.set_result(None)
                return done
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

    def record(
        self, error: str | None, latency: float, *, pushed: bool = False, detail: str = ""
    ) -> None:
        """Count one result: None for a success, else why it failed (`detail`, for the log
        only, may say more). A `pushed` result is the dependency's own say (a status its Watch
        sent): it takes effect at once, thresholds aside, and holds until the next result."""
        now = time.time()
        self.last_run_time = now
        self.last_latency = latency
        self.last_error = error or ""
        self._last_result = self._clock()
        if self._first is not None and not self._first.done():
            self._first.set_result(None)
        self._fresh_until = math.inf if pushed else self._last_result + self.spec.stale_after
        if error is None:
            self._successes, self._failures = self._successes + 1, 0
        else:
            self._successes, self._failures = 0, self._failures + 1
        was = self._passing
        if pushed:
            self._passing = error is None
        elif not was and self._successes >= self.spec.success_threshold:
            self._passing = True
        elif was and self._failures >= self.spec.failure_threshold:
            self._passing = False
        if self._passing != was or self.last_change_time is None:
            if self._history is not None:
                self._history.add(
                    "check",
                    self.spec.name,
                    "no result" if self.last_change_time is None else _word(was),
                    _word(self._passing),
                    self.last_error or "passes",
                )
            self.last_change_time = now
            self._log_change(was and not pushed, detail)
        self._on_result(self)

    async def _loop(self) -> None:
        if isinstance(self._checker, Follower):
            self._following = True
            try:
                await self._checker.follow(self._pushed)
            except Exception as exc:  # a defect: say so, and fall back to polling
                log.exception("check %r: following failed: %s", self.spec.name, exc)
            self._following = False
        while True:
            await asyncio.shield(self._run_scheduled())
            await asyncio.sleep(self.spec.interval)

    def _run_scheduled(self) -> asyncio.Future[None]:
        if self._run is None or self._run.done():
            self._run = asyncio.ensure_future(self._run_once())
        return self._run

    def _pushed(self, error: str | None, latency: float, pushed: bool) -> None:
        self.record(error, latency, pushed=pushed)

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
            self.record(describe(error, self.spec.kind), latency, detail=_detail(error))
        else:
            self.record(None, latency)

    def _log_change(self, counted: bool, detail: str) -> None:
        """Log the change; `counted`: it failed after its failure threshold."""
        spec = self.spec
        fields = {
            "event": "check_changed",
            "check": spec.name,
            "kind": spec.kind,
            "required": spec.required,
            "passing": self._passing,
            "error": self.last_error,
            "detail": detail,
        }
        if self._passing:
            log.info("check %r (%s) passes", spec.name, spec.kind, extra=fields)
        elif counted:
            log.warning(
                "check %r (%s) fails after %d failures: %s%s",
                spec.name,
                spec.kind,
                self._failures,
                self.last_error,
                f" ({detail})" if detail else "",
                extra=fields,
            )
        else:
            log.warning(
                "check %r (%s) fails: %s%s",
                spec.name,
                spec.kind,
                self.last_error,
                f" ({detail})" if detail else "",
                extra=fields,
            )


def _word(passing: bool) -> str:
    return "passing" if passing else "failing"


def _consume(future: asyncio.Future[None]) -> None:
    """Read an abandoned run's outcome so asyncio does not report it as never retrieved."""
    with contextlib.suppress(asyncio.CancelledError, Exception):
        future.exception()
