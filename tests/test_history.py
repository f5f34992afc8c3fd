"""History on its own: what the health state and the checks record, and its bound."""

from __future__ import annotations

from petsage_grpc.checks.runner import CheckRunner
from petsage_grpc.checks.spec import CheckSpec
from petsage_grpc.health import NOT_SERVING, SERVING, HealthState
from petsage_grpc.history import History


def changes(history: History) -> list[tuple[str, str, str, str, str]]:
    return [(t.kind, t.name, t.old, t.new, t.reason) for t in history.recent()]


def test_a_status_change_is_recorded_with_its_reason():
    state = HealthState(history=(history := History()))
    state.set("readiness", SERVING)
    state.set("readiness", NOT_SERVING, "required check 'db' fails: connection refused")
    assert changes(history) == [
        ("service", "readiness", "SERVING", "NOT_SERVING",
         "required check 'db' fails: connection refused"),
    ]  # fmt: skip


def test_a_set_that_changes_nothing_is_not_recorded():
    state = HealthState(history=(history := History()))
    state.set("a", SERVING)
    state.set("a", SERVING)
    assert history.recent() == []


def test_shutdown_is_the_reason_of_its_changes():
    state = HealthState(history=(history := History()))
    state.set("a", SERVING)
    state.shutdown()
    assert [t.reason for t in history.recent()] == ["shutting down"]


def test_history_keeps_only_the_last_transitions():
    history = History(limit=3)
    for number in range(5):
        history.add("service", f"s{number}", "SERVING", "NOT_SERVING", "")
    assert [t.name for t in history.recent()] == ["s2", "s3", "s4"]


def test_recent_gives_the_newest():
    history = History()
    for number in range(5):
        history.add("service", f"s{number}", "SERVING", "NOT_SERVING", "")
    assert [t.name for t in history.recent(2)] == ["s3", "s4"]


def test_a_check_change_is_recorded_with_its_error():
    history = History()
    spec = CheckSpec(name="db", kind="tcp", target="127.0.0.1:1", failure_threshold=1)
    runner = CheckRunner(spec, lambda runner: None, history=history)
    runner.record(None, 0.001)
    runner.record("connection refused", 0.001)
    assert changes(history) == [
        ("check", "db", "no result", "passing", "passes"),
        ("check", "db", "passing", "failing", "connection refused"),
    ]
