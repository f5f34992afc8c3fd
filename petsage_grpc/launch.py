"""The program's first step, before anything slow is imported: a process that will serve holds
the signals the server acts on (`petsage_grpc.signals`), so that a stop signal while it starts
is kept and acted on, not fatal. Then the command line runs."""

from __future__ import annotations

import sys

from petsage_grpc import signals


def run() -> None:
    """The `petsage-grpc` program (and `python -m petsage_grpc`)."""
    if sys.argv[1:2] == ["serve"]:
        signals.hold()
    from petsage_grpc.cli import run as run_command_line

    run_command_line()
