"""HealthState on its own: statuses, shutdown/resume, and watchers that keep only the latest."""

from __future__ import annotations

import asyncio
import threading

from petsage_grpc.health import NOT_SERVING, SERVICE_UNKNOWN, SERVING, HealthState


def test_unregistered_service_has_no_status():
    assert HealthState().get("x") is None


def test_set_registers_a_service():
    state = HealthState()
    state.set("x", SERVING)
    assert state.get("x") == SERVING
    assert state.statuses() == {"x": SERVING}


def test_set_changes_a_status():
    state = HealthState()
    state.set("x", SERVING)
    state.set("x", NOT_SERVING)
    assert state.get("x") == NOT_SERVING
    assert state.statuses() == {"x": NOT_SERVING}


def shut_down() -> HealthState:
    """A state with two SERVING services, then shut down."""
    state = HealthState()
    state.set("", SERVING)
    state.set("a", SERVING)
    state.shutdown()
    return state


def test_shutdown_sets_every_service_not_serving():
    assert shut_down().statuses() == {"": NOT_SERVING, "a": NOT_SERVING}


def test_set_is_ignored_until_resume():
    state = shut_down()
    state.set("a", SERVING)
    assert state.statuses() == {"": NOT_SERVING, "a": NOT_SERVING}
    state.resume()
    state.set("a", NOT_SERVING)
    assert state.get("a") == NOT_SERVING


def test_resume_sets_every_service_serving():
    state = shut_down()
    state.resume()
    assert state.statuses() == {"": SERVING, "a": SERVING}


def test_watcher_gets_only_the_latest_of_many_changes():
    async def scenario() -> list[int | None]:
        state = HealthState()
        state.set("a", SERVING)
        watcher = state.watch("a")
        first = await watcher.next()
        for _ in range(50):
            state.set("a", NOT_SERVING)
            state.set("a", SERVING)
        state.set("a", NOT_SERVING)
        return [first, await watcher.next()]

    assert asyncio.run(scenario()) == [SERVING, NOT_SERVING]


def test_watcher_sends_nothing_when_changes_cancel_out():
    async def scenario() -> int | None:
        state = HealthState()
        state.set("a", SERVING)
        watcher = state.watch("a")
        await watcher.next()
        state.set("a", NOT_SERVING)
        state.set("a", SERVING)
        state.end_watches()
        return await watcher.next()

    assert asyncio.run(scenario()) is None


def test_ended_watcher_delivers_its_last_status_first():
    async def scenario() -> list[int | None]:
        state = HealthState()
        state.set("a", SERVING)
        watcher = state.watch("a")
        first = await watcher.next()
        state.shutdown()
        state.end_watches()
        return [first, await watcher.next(), await watcher.next()]

    assert asyncio.run(scenario()) == [SERVING, NOT_SERVING, None]


def test_set_from_another_thread_wakes_the_watcher():
    async def scenario() -> list[int | None]:
        state = HealthState()
        watcher = state.watch("a")
        first = await watcher.next()
        setter = threading.Thread(target=state.set, args=("a", SERVING))
        setter.start()
        second = await asyncio.wait_for(watcher.next(), timeout=10)
        setter.join()
        return [first, second]

    assert asyncio.run(scenario()) == [SERVICE_UNKNOWN, SERVING]


def test_unwatch_forgets_the_watcher():
    async def scenario() -> int:
        state = HealthState()
        watcher = state.watch("never.registered")
        state.unwatch(watcher)
        return state.watcher_count

    assert asyncio.run(scenario()) == 0


def test_set_refuses_a_value_that_is_no_serving_status():
    import pytest

    with pytest.raises(ValueError, match="serving status"):
        HealthState().set("a", 7)
