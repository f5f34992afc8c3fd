"""The signals a serving process acts on, held from its first moment until the server can act.

A process that will serve blocks them first thing (`hold()`), before anything slow is imported or
started: a signal that comes meanwhile stays pending instead of killing it, and is acted on the
moment the server has installed its handlers and `release()`s them. Threads started while they
are held (grpc's) inherit the mask, so every signal is taken by the main thread.

    SIGTERM, SIGINT   drain and stop (a second one stops at once)
    SIGHUP            re-read the TLS files now
    SIGUSR1           write every thread's stack to stderr
    SIGUSR2           logged and ignored

This module imports nothing of the server: the CLI uses it before anything else.
"""

from __future__ import annotations

import signal

STOP = (signal.SIGTERM, signal.SIGINT)
HANDLED = (*STOP, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2)


def hold() -> None:
    """Keep HANDLED signals pending (in this thread and the threads it starts) until `release()`."""
    signal.pthread_sigmask(signal.SIG_BLOCK, HANDLED)


def release() -> None:
    """Deliver HANDLED signals again, those that came while held first."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, HANDLED)
