"""History: the last transitions of every service's serving status and every check's result, with
their time and reason, for operators (the admin port's status page and JSON, SmokeTest).

The health state records its services' transitions and the runners their checks', each as it
happens; readers take a snapshot. A bounded deque behind a lock: safe from any thread, O(1) per
transition, and never more than `limit` entries.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass

DEFAULT_LIMIT = 200


@dataclass(frozen=True)
class Transition:
    """One change: of a service's status (`kind` "service": SERVING, NOT_SERVING ...) or of a
    check's result (`kind` "check": passing, failing; "no result" before its first)."""

    time: float
    """Wall-clock seconds since the epoch."""
    kind: str
    name: str
    old: str
    new: str
    reason: str
    """Why, in words that name no target: a check's error, "maintenance", "shutting down" ..."""


class History:
    """The last `limit` transitions, oldest first."""

    def __init__(self, limit: int = DEFAULT_LIMIT) -> None:
        self.limit = limit
        self._lock = threading.Lock()
        self._transitions: deque[Transition] = deque(maxlen=limit)

    def add(self, kind: str, name: str, old: str, new: str, reason: str) -> None:
        transition = Transition(time.time(), kind, name, old, new, reason)
        with self._lock:
            self._transitions.append(transition)

    def recent(self, count: int | None = None) -> list[Transition]:
        """The last `count` transitions (all kept, without it), oldest first."""
        with self._lock:
            items = list(self._transitions)
        return items if count is None else items[-count:] if count > 0 else []
