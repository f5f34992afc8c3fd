"""How much one exec probe costs: wall time and peak memory of one successful probe, beside the
floor (`python -c "import grpc"`) and grpc_health_probe where that binary is on PATH.

Usage: python bench/probe.py [RUNS]   (prints a markdown table; loopback only, bounded)
"""

from __future__ import annotations

import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

BIN = Path(sys.executable).parent
RUNS = int(sys.argv[1]) if len(sys.argv) > 1 else 15


def measure(command: list[str]) -> tuple[float, float, int]:
    """(wall seconds, peak RSS in MiB, exit code) of one run."""
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    return wall, usage.ru_maxrss / 1024, process.returncode


def row(name: str, command: list[str]) -> str:
    measure(command)  # warm the page cache
    runs = [measure(command) for _ in range(RUNS)]
    codes = {code for _, _, code in runs}
    wall = statistics.median(w for w, _, _ in runs) * 1000
    rss = statistics.median(r for _, r, _ in runs)
    return f"| {name} | {wall:.0f} ms | {rss:.1f} MiB | {','.join(map(str, sorted(codes)))} |"


def main() -> None:
    server = subprocess.Popen(
        [str(BIN / "petsage-grpc"), "serve", "--host", "127.0.0.1", "--port", "0"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stderr is not None
        deadline = time.monotonic() + 30
        port = None
        while port is None and time.monotonic() < deadline:
            line = server.stderr.readline()
            if match := re.search(r"serving on \S+:(\d+) ", line):
                port = match.group(1)
        if port is None:
            raise SystemExit("the server did not start")
        address = f"127.0.0.1:{port}"
        rows = [
            row('`python -c "import grpc"` (the floor)', [sys.executable, "-c", "import grpc"]),
            row("`petsage-grpc probe`", [str(BIN / "petsage-grpc"), "probe", "-addr", address]),
        ]
        go_probe = shutil.which("grpc_health_probe")
        rows.append(
            row("`grpc_health_probe`", [go_probe, "-addr", address])
            if go_probe
            else "| `grpc_health_probe` | skipped: not on PATH | | |"
        )
        print(f"One successful probe, median of {RUNS} runs:\n")
        print("| command | wall time | peak RSS | exit codes |")
        print("|---|---|---|---|")
        print("\n".join(rows))
    finally:
        server.terminate()
        server.wait(30)


if __name__ == "__main__":
    main()
