"""CheckRunner's arithmetic on its own, with a clock the test moves: thresholds and staleness."""

from __future__ import annotations

from typing import Any

from petsage_grpc.checks.runner import CheckRunner
from petsage_grpc.checks.spec import CheckSpec


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make_runner(clock: Clock | None = None, **settings: Any) -> CheckRunner:
    spec = CheckSpec(name="db", kind="tcp", target="127.0.0.1:1", **settings)
    return CheckRunner(spec, lambda runner: None, clock=clock or Clock())


def test_fails_before_any_result():
    runner = make_runner()
    assert not runner.is_passing()
    assert runner.why_failing() == "no result yet"


def test_one_success_passes_by_default():
    runner = make_runner()
    runner.record(None, 0.001)
    assert runner.is_passing()
    assert runner.why_failing() == ""


def test_passing_check_survives_failures_below_the_threshold():
    runner = make_runner(failure_threshold=3)
    runner.record(None, 0.001)
    runner.record("connection refused", 0.001)
    runner.record("connection refused", 0.001)
    assert runner.is_passing()


def test_passing_check_fails_at_the_failure_threshold():
    runner = make_runner(failure_threshold=3)
    runner.record(None, 0.001)
    for _ in range(3):
        runner.record("connection refused", 0.001)
    assert runner.why_failing() == "connection refused"


def test_a_success_resets_the_failure_count():
    runner = make_runner(failure_threshold=2)
    runner.record(None, 0.001)
    for _ in range(3):
        runner.record("connection refused", 0.001)
        runner.record(None, 0.001)
    assert runner.is_passing()
    assert runner.consecutive_failures == 0


def test_failing_check_needs_success_threshold_successes():
    runner = make_runner(success_threshold=2)
    runner.record(None, 0.001)
    assert not runner.is_passing()
    runner.record(None, 0.001)
    assert runner.is_passing()


def test_result_goes_stale_after_three_intervals_plus_the_timeout():
    clock = Clock()
    runner = make_runner(clock, interval=10.0, timeout=1.0)
    runner.record(None, 0.001)
    clock.now += 30.9
    assert runner.is_passing()
    clock.now += 0.1
    assert runner.why_failing() == "no result for over 31s"


def test_fresh_result_after_staleness_passes_again():
    clock = Clock()
    runner = make_runner(clock, interval=1.0)
    runner.record(None, 0.001)
    clock.now += 60
    runner.record(None, 0.001)
    assert runner.is_passing()


def test_record_keeps_the_last_result():
    runner = make_runner()
    runner.record("HTTP 503", 0.25)
    assert (runner.last_error, runner.last_latency) == ("HTTP 503", 0.25)


def test_change_time_moves_only_when_passing_changes():
    runner = make_runner()
    runner.record(None, 0.001)
    changed = runner.last_change_time
    runner.record(None, 0.001)
    assert runner.last_change_time == changed
