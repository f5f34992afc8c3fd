"""A module whose import takes a while, as a big application's might: it holds the server in
start-up, before signals are handled by the event loop."""

from __future__ import annotations

import sys
import time

print("importing a slow module", file=sys.stderr, flush=True)
time.sleep(1.0)  # the slow import under test, not a wait of the test


async def check() -> None:
    """Passes."""
