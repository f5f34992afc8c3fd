"""make bench: PetSage beside the reference servers, every scenario in one run, one table.

Each server under test runs as its own process on 127.0.0.1, pinned to CPU 0; the load runs
pinned to CPU 1 (where the machine has two). Servers follow one contract (bench/servers/*.py,
bench/go): argv PORT, prints `PORT <n>` once serving, and each stdin line `set STATUS` changes
the status of "" and prints `ok` once set() has returned.

Usage: python bench/run.py [--quick] [--only=NAME]   Prints markdown; bounded; loopback only.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.helpers import open_never_reading_watch

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
QUICK = "--quick" in sys.argv
TURNS = 1 if QUICK else 3
"""Turns each server takes at the Check and start-up rows."""
TWO_CPUS = (os.cpu_count() or 1) >= 2 and shutil.which("taskset") is not None
SERVER_CPU, LOAD_CPU = "0", "1"
STEP = 120.0  # the most any one step may take, in seconds
CHECK_PATH = "/grpc.health.v1.Health/Check"
SERVING = health_pb2.HealthCheckResponse.SERVING


def pinned(cpu: str, command: list[str]) -> list[str]:
    return ["taskset", "-c", cpu, *command] if TWO_CPUS else command


class Server:
    """A server under test, as a process."""

    def __init__(self, name: str, command: list[str]) -> None:
        self.name = name
        self.process = subprocess.Popen(
            pinned(SERVER_CPU, [*command, "0"]),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        self.port = int(self._read_line(STEP).split()[1])
        self.address = f"127.0.0.1:{self.port}"

    def _read_line(self, timeout: float) -> str:
        """A line of the server's stdout, or '' if none comes within `timeout`."""
        assert self.process.stdout is not None
        lines: list[str] = []
        reader = threading.Thread(target=lambda: lines.append(self.process.stdout.readline()))  # type: ignore[union-attr]
        reader.daemon = True
        reader.start()
        reader.join(timeout)
        return lines[0].strip() if lines else ""

    def set(self, status: str, timeout: float = 5.0) -> float | None:
        """Set the status of ""; seconds until set() returned, None if it stalled."""
        assert self.process.stdin is not None
        began = time.monotonic()
        self.process.stdin.write(f"set {status}\n")
        self.process.stdin.flush()
        return time.monotonic() - began if self._read_line(timeout) == "ok" else None

    def cpu_seconds(self) -> float:
        with open(f"/proc/{self.process.pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def rss_kib(self) -> int:
        return self._status("VmRSS:")

    def threads(self) -> int:
        return self._status("Threads:")

    def _status(self, field: str) -> int:
        with open(f"/proc/{self.process.pid}/status") as status:
            return next(int(line.split()[1]) for line in status if line.startswith(field))

    def stop(self) -> None:
        with suppress(Exception):
            assert self.process.stdin is not None
            self.process.stdin.close()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)


def servers() -> dict[str, list[str]]:
    found = {
        "PetSage": [sys.executable, str(HERE / "servers" / "petsage.py")],
        "sync reference": [sys.executable, str(HERE / "servers" / "reference_sync.py")],
        "aio reference": [sys.executable, str(HERE / "servers" / "reference_aio.py")],
    }
    go_binary, failure = go_build("petsage-bench-go")
    if failure:
        SKIPPED["grpc-go"] = failure
    else:
        found["grpc-go"] = [str(go_binary)]
    return found


SKIPPED: dict[str, str] = {}


def go_build(name: str, package: str = ".") -> tuple[Path, str]:
    """bench/go/build.sh: the binary's path, and why it was not built ('' when it was)."""
    binary = Path(tempfile.gettempdir()) / name
    built = subprocess.run(
        ["bash", str(HERE / "go" / "build.sh"), str(binary), package],
        capture_output=True,
        text=True,
        timeout=STEP * 2,
        check=False,
    )
    if built.returncode == 0:
        return binary, ""
    return binary, (built.stderr.strip().splitlines() or ["not built"])[-1]


def watchers_binary() -> Path:
    """The Watch load (bench/go/watchers): grpc-go, so the server limits the fan-out rows, not
    the client. grpc.aio's client loses the last message of some streams here (bench/NOTES.md)."""
    binary, failure = go_build("petsage-bench-watchers", "watchers")
    if failure:
        raise SystemExit(f"the Watch load did not build: {failure}")
    return binary


@contextmanager
def serving(name: str, command: list[str]) -> Iterator[Server]:
    server = Server(name, command)
    try:
        yield server
    finally:
        server.stop()


def status_of(address: str, timeout: float = 5.0) -> int | None:
    """The status a Check of "" answers, on a connection of its own; None if it fails."""
    with grpc.insecure_channel(address) as channel:
        try:
            response = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=timeout
            )
        except grpc.RpcError:
            return None
    return int(response.status)


def check(address: str, timeout: float = 5.0) -> bool:
    return bool(status_of(address, timeout) == SERVING)


# --- 1. Check throughput and latency (h2load) ----------------------------------------------


def check_as_h2load_sends_it(server: Server) -> None:
    """Send the very request h2load sends and check that gRPC answered it well: h2load counts
    any HTTP 200 as a success, whatever the grpc-status trailer says."""
    import h2.config
    import h2.connection
    import h2.events

    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    stream = conn.get_next_available_stream_id()
    conn.send_headers(
        stream,
        [
            (":method", "POST"),
            (":scheme", "http"),
            (":path", CHECK_PATH),
            (":authority", server.address),
            ("content-type", "application/grpc"),
            ("te", "trailers"),
        ],
    )
    conn.send_data(stream, b"\x00\x00\x00\x00\x00", end_stream=True)
    body, trailers = b"", {}
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(conn.data_to_send())
        ended = False
        while not ended:
            data = sock.recv(65536)
            if not data:
                break
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.DataReceived):
                    body += event.data
                    conn.acknowledge_received_data(event.flow_controlled_length, stream)
                elif isinstance(event, h2.events.TrailersReceived):
                    trailers = {
                        (k.decode() if isinstance(k, bytes) else k): (
                            v.decode() if isinstance(v, bytes) else v
                        )
                        for k, v in event.headers
                    }
                elif isinstance(event, h2.events.StreamEnded):
                    ended = True
            sock.sendall(conn.data_to_send())
    response = health_pb2.HealthCheckResponse.FromString(body[5:])
    if trailers.get("grpc-status") != "0" or response.status != SERVING:
        raise SystemExit(f"{server.name}: h2load's request is not answered SERVING: {trailers}")


def h2load(server: Server, clients: int, streams: int, requests: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as scratch:
        body = Path(scratch) / "body"
        body.write_bytes(b"\x00\x00\x00\x00\x00")  # gRPC framing of an empty HealthCheckRequest
        log = Path(scratch) / "log"

        def command(count: int) -> list[str]:
            return pinned(
                LOAD_CPU,
                [
                    "h2load",
                    "-n",
                    str(count),
                    "-c",
                    str(clients),
                    "-m",
                    str(streams),
                    "-d",
                    str(body),
                    "-H",
                    "content-type: application/grpc",
                    "-H",
                    "te: trailers",
                    "--log-file",
                    str(log),
                    f"http://{server.address}{CHECK_PATH}",
                ],
            )

        subprocess.run(command(2000), capture_output=True, timeout=STEP, check=False)  # warm-up
        cpu = server.cpu_seconds()
        result = subprocess.run(
            command(requests), capture_output=True, text=True, timeout=STEP, check=False
        )
        cpu = server.cpu_seconds() - cpu
        durations = sorted(
            int(line.split("\t")[2]) / 1000 for line in log.read_text().splitlines() if line
        )
    throughput = next(
        float(line.split(",")[1].split()[0])
        for line in result.stdout.splitlines()
        if line.startswith("finished in")
    )
    succeeded = next(
        int(line.split("succeeded")[0].split(",")[-1])
        for line in result.stdout.splitlines()
        if line.startswith("requests:")
    )
    return {
        "rps": throughput,
        "p50_ms": durations[len(durations) // 2],
        "p99_ms": durations[int(len(durations) * 0.99)],
        "cpu_us": cpu / max(succeeded, 1) * 1e6,
        "ok": succeeded,
    }


# --- 2.-4. Watch scenarios ----------------------------------------------------------------


class Watchers:
    """bench/go/watchers: COUNT Watch streams from one grpc-go client process."""

    binary: Path | None = None

    def __init__(self, address: str, count: int) -> None:
        if Watchers.binary is None:
            Watchers.binary = watchers_binary()
        connections = max(1, min(count // 50, 200))
        self.process = subprocess.Popen(
            pinned(LOAD_CPU, [str(Watchers.binary), address, str(count), str(connections)]),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        self.opened = self._answer()

    def _answer(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        return json.loads(line) if line else {"error": "no answer"}

    def expect(self, status: str, seconds: float, cancel: int = 0) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(f"expect {status} {seconds} {cancel}\n")
        self.process.stdin.flush()

    def result(self) -> dict[str, Any]:
        return self._answer()

    def close(self) -> None:
        with suppress(Exception):
            assert self.process.stdin is not None
            self.process.stdin.write("quit\n")
            self.process.stdin.close()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(int(len(ordered) * share), len(ordered) - 1)] if ordered else float("nan")


def fan_out(server: Server, count: int) -> dict[str, Any]:
    idle = server.rss_kib()
    watchers = Watchers(server.address, count)
    try:
        opened = watchers.opened
        rss = server.rss_kib()
        threads = server.threads()
        check_ms = []
        for _ in range(20):
            began = time.perf_counter()
            check(server.address)
            check_ms.append((time.perf_counter() - began) * 1000)
        watchers.expect("NOT_SERVING", 60)
        cpu = server.cpu_seconds()
        began = time.monotonic()
        server.set("NOT_SERVING", timeout=60)
        seen = watchers.result()
        cpu = server.cpu_seconds() - cpu
        latencies = [(arrival - began) * 1000 for arrival in seen.get("arrivals", [])]
        server.set("SERVING", timeout=60)
    finally:
        watchers.close()
    return {
        "failed": opened.get("failed", {}),
        "first_all_s": opened.get("first_all_s", float("nan")),
        "p50_ms": percentile(latencies, 0.5),
        "p99_ms": percentile(latencies, 0.99),
        "max_ms": max(latencies, default=float("nan")),
        "missing": seen.get("missing", count),
        "kib_per_watcher": (rss - idle) / max(opened.get("opened", 0), 1),
        "check_ms": statistics.median(check_ms),
        "threads": threads,
        "cpu_us_per_update": cpu / max(seen.get("received", 0), 1) * 1e6,
    }


def never_reading(server: Server) -> dict[str, Any]:
    stuck = open_never_reading_watch(server.port, "")
    watchers = Watchers(server.address, 100)
    try:
        returned = 0
        statuses = ["NOT_SERVING", "SERVING"]
        for number in range(201):
            if server.set(statuses[number % 2], timeout=5) is None:
                break
            returned += 1
        final = statuses[(returned - 1) % 2] if returned else "SERVING"
        watchers.expect(final, 10)
        ended = watchers.result()
        checks_ok = sum(1 for _ in range(5) if status_of(server.address, 1) is not None)
    finally:
        stuck.close()
        watchers.close()
    return {
        "sets_returned": returned,
        "watchers_on_final": 100 - ended.get("missing", 100),
        "checks_answered": checks_ok,
    }


def churn(server: Server) -> dict[str, Any]:
    watchers = Watchers(server.address, 1000)
    try:
        watchers.expect("NOT_SERVING", 20, cancel=10)
        returned = server.set("NOT_SERVING", timeout=20)
        seen = watchers.result()
    finally:
        watchers.close()
    return {"set_returned": returned is not None, "survivors_saw": len(seen.get("arrivals", []))}


# --- 5. start-up and footprint -------------------------------------------------------------


def start_up(command: list[str]) -> dict[str, Any]:
    times, rss, threads = [], [], []
    for _ in range(5):
        began = time.monotonic()
        with serving("", command) as server:
            while not check(server.address, timeout=1):
                if time.monotonic() - began > STEP:
                    break
            times.append(time.monotonic() - began)
            rss.append(server.rss_kib())
            threads.append(server.threads())
    return {
        "ms": statistics.median(times) * 1000,
        "rss_mib": statistics.median(rss) / 1024,
        "threads": statistics.median(threads),
    }


def medians(turns: list[dict[str, float]]) -> dict[str, float]:
    """Each figure's median over the turns."""
    return {key: statistics.median(figures[key] for figures in turns) for key in turns[0]}


def measure_command(command: list[str], runs: int = 15) -> tuple[float, float]:
    """Median wall time (ms) and peak RSS (MiB) of a command, over `runs` runs."""

    def once() -> tuple[float, float]:
        began = time.perf_counter()
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _, _, usage = os.wait4(process.pid, 0)
        return (time.perf_counter() - began) * 1000, usage.ru_maxrss / 1024

    once()
    results = [once() for _ in range(runs)]
    return statistics.median(r[0] for r in results), statistics.median(r[1] for r in results)


# --- the run ---------------------------------------------------------------------------------


def main() -> None:
    if shutil.which("h2load") is None:
        raise SystemExit("h2load is missing: apt-get install nghttp2-client (make bench does)")
    sizes = [1000] if QUICK else [1000, 5000, 10000]
    requests = 5000 if QUICK else 40000
    under_test = servers()
    only = [arg.split("=", 1)[1] for arg in sys.argv if arg.startswith("--only=")]
    if only:  # for working on one server: python bench/run.py --only=PetSage
        under_test = {name: command for name, command in under_test.items() if name in only}
    results: dict[str, dict[str, Any]] = {name: {} for name in under_test}
    # The per-call rows compare servers a few percent apart on a machine that drifts more than
    # that over a run: the servers take turns, and each figure is the median of its turns, so
    # that a slow spell falls on all of them alike.
    turns: dict[str, dict[str, list[dict[str, float]]]] = {
        name: {"check_4x32": [], "check_1x1": [], "start_up": []} for name in under_test
    }
    for turn in range(TURNS):
        for name, command in under_test.items():
            print(f"measuring {name}: Check, start-up ({turn + 1}/{TURNS}) ...", file=sys.stderr)
            with serving(name, command) as server:
                check_as_h2load_sends_it(server)
                turns[name]["check_4x32"].append(h2load(server, 4, 32, requests))
                turns[name]["check_1x1"].append(h2load(server, 1, 1, requests // 8))
            turns[name]["start_up"].append(start_up(command))
    for name, rows in turns.items():
        results[name].update({row: medians(figures) for row, figures in rows.items()})
    for name, command in under_test.items():
        figures = results[name]
        print(f"measuring {name}: Watch ...", file=sys.stderr, flush=True)
        for size in sizes:
            with serving(name, command) as server:
                figures[f"watch_{size}"] = fan_out(server, size)
        with serving(name, command) as server:
            figures["never_reading"] = never_reading(server)
        with serving(name, command) as server:
            figures["churn"] = churn(server)
    floor = measure_command([sys.executable, "-c", "import grpc"])
    with serving("PetSage", servers()["PetSage"]) as server:
        probe = measure_command([str(BIN / "petsage-grpc"), "probe", "-addr", server.address])
        go_probe = shutil.which("grpc_health_probe")
        go = measure_command([go_probe, "-addr", server.address]) if go_probe else None
    print(table(results, sizes, floor, probe, go))
    if {"PetSage", "sync reference", "aio reference"} <= set(results):
        print()
        print(targets(results, sizes[-1]))


def table(
    results: dict[str, dict[str, Any]],
    sizes: list[int],
    floor: tuple[float, float],
    probe: tuple[float, float],
    go_probe: tuple[float, float] | None,
) -> str:
    names = list(results) + list(SKIPPED)
    rows: list[Row] = [
        ("Check 4×32: req/s", lambda f: f"{f['check_4x32']['rps']:,.0f}"),
        ("Check 4×32: p50 / p99", lambda f: _ms(f["check_4x32"], "p50_ms", "p99_ms")),
        ("Check 4×32: server CPU per request", lambda f: f"{f['check_4x32']['cpu_us']:.0f} µs"),
        ("Check 1×1: req/s", lambda f: f"{f['check_1x1']['rps']:,.0f}"),
        ("Check 1×1: p50 / p99", lambda f: _ms(f["check_1x1"], "p50_ms", "p99_ms")),
    ]
    for size in sizes:
        rows += _watch_rows(size)
    rows += [
        (
            "never-reading watcher: set-status calls returned (of 201)",
            lambda f: str(f["never_reading"]["sets_returned"]),
        ),
        (
            "never-reading watcher: normal watchers on the final status (of 100)",
            lambda f: str(f["never_reading"]["watchers_on_final"]),
        ),
        (
            "never-reading watcher: Checks answered (of 5)",
            lambda f: str(f["never_reading"]["checks_answered"]),
        ),
        (
            f"churn: set returned / survivors saw the change (of {WATCHED_UPDATES})",
            lambda f: (
                f"{'yes' if f['churn']['set_returned'] else 'NO (stalled)'} / {f['churn']['survivors_saw']}"
            ),
        ),
        (
            f"start-up: spawn to first SERVING (median of {TURNS} turns of 5)",
            lambda f: f"{f['start_up']['ms']:.0f} ms",
        ),
        ("idle RSS", lambda f: f"{f['start_up']['rss_mib']:.1f} MiB"),
        ("threads at idle", lambda f: f"{f['start_up']['threads']:.0f}"),
    ]
    lines = ["| scenario | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for label, cell in rows:
        cells = [cell(results[n]) if n in results else f"skipped: {SKIPPED[n]}" for n in names]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    cpu_note = "server pinned to CPU 0, load to CPU 1" if TWO_CPUS else "no pinning (one CPU)"
    lines += [
        "",
        f"Probe command, one successful probe, median of 15 runs ({cpu_note}):",
        "",
        "| command | wall time | peak RSS |",
        "|---|---|---|",
        f'| `python -c "import grpc"` (the floor) | {floor[0]:.0f} ms | {floor[1]:.1f} MiB |',
        f"| `petsage-grpc probe` | {probe[0]:.0f} ms ({probe[0] / floor[0]:.2f}× the floor) "
        f"| {probe[1]:.1f} MiB |",
        "| `grpc_health_probe` | "
        + (
            f"{go_probe[0]:.0f} ms | {go_probe[1]:.1f} MiB |"
            if go_probe
            else "skipped: not on PATH | |"
        ),
    ]
    return "\n".join(lines)


Row = tuple[str, Callable[[dict[str, Any]], str]]

WATCHED_UPDATES = 990  # churn: 1,000 watchers, 10 cancelled


def targets(results: dict[str, dict[str, Any]], size: int) -> str:
    """Issue 19's targets: PetSage against the Python references of the same run, as ratios."""
    ours, sync, aio = results["PetSage"], results["sync reference"], results["aio reference"]
    watch = f"watch_{size}"
    best_p99 = min(sync[watch]["p99_ms"], aio[watch]["p99_ms"])
    never, churned = ours["never_reading"], ours["churn"]
    rows: list[tuple[str, str, bool]] = [
        _ratio(
            "Check 4×32 req/s ≥ 1.0 × sync reference",
            ours["check_4x32"]["rps"] / sync["check_4x32"]["rps"],
            1.0,
            above=True,
        ),
        _ratio(
            "Check 4×32 req/s ≥ 1.35 × aio reference",
            ours["check_4x32"]["rps"] / aio["check_4x32"]["rps"],
            1.35,
            above=True,
        ),
        _ratio(
            "server CPU per Check ≤ 1.05 × sync reference",
            ours["check_4x32"]["cpu_us"] / sync["check_4x32"]["cpu_us"],
            1.05,
        ),
        _ratio(
            "Check 1×1 p99 ≤ sync reference",
            ours["check_1x1"]["p99_ms"] / sync["check_1x1"]["p99_ms"],
            1.0,
        ),
        (
            f"{size:,}-stream burst opens whole",
            f"{size - sum(ours[watch]['failed'].values()):,} of {size:,}",
            not ours[watch]["failed"],
        ),
        _ratio(
            f"change to {size:,} watchers p99 ≤ 0.9 × best reference",
            ours[watch]["p99_ms"] / best_p99,
            0.9,
            note=f" (the references reached {_reached(sync[watch], size):,} and"
            f" {_reached(aio[watch], size):,} watchers, PetSage {_reached(ours[watch], size):,})",
        ),
        _ratio(
            f"server CPU per delivered update ({size:,}) ≤ 0.9 × best reference",
            ours[watch]["cpu_us_per_update"]
            / min(sync[watch]["cpu_us_per_update"], aio[watch]["cpu_us_per_update"]),
            0.9,
        ),
        _ratio(
            f"RSS per stream ({size:,}) ≤ aio reference",
            ours[watch]["kib_per_watcher"] / aio[watch]["kib_per_watcher"],
            1.0,
        ),
        (
            "never-reading watcher held",
            f"{never['sets_returned']}/201 sets, {never['watchers_on_final']}/100 on the final"
            f" status, {never['checks_answered']}/5 Checks",
            (never["sets_returned"], never["watchers_on_final"], never["checks_answered"])
            == (201, 100, 5),
        ),
        (
            "churn held",
            f"set returned: {'yes' if churned['set_returned'] else 'no'},"
            f" {churned['survivors_saw']}/{WATCHED_UPDATES} saw the change",
            churned["set_returned"] and churned["survivors_saw"] == WATCHED_UPDATES,
        ),
        _ratio(
            "start-up ≤ 1.1 × sync reference",
            ours["start_up"]["ms"] / sync["start_up"]["ms"],
            1.1,
        ),
    ]
    lines = ["| target (PetSage, this run) | measured | met |", "|---|---|---|"]
    lines += [
        f"| {label} | {measured} | {'yes' if met else 'NO'} |" for label, measured, met in rows
    ]
    return "\n".join(lines)


def _ratio(
    label: str, ratio: float, bound: float, above: bool = False, note: str = ""
) -> tuple[str, str, bool]:
    return label, f"{ratio:.2f}×{note}", ratio >= bound if above else ratio <= bound


def _reached(watch: dict[str, Any], size: int) -> int:
    """Watchers that opened and saw the change."""
    return int(size - sum(watch["failed"].values()) - watch["missing"])


def _watch_rows(size: int) -> list[Row]:
    def of(figures: dict[str, Any]) -> dict[str, Any]:
        watch: dict[str, Any] = figures[f"watch_{size}"]
        return watch

    return [
        (f"{size:,} Watch burst: streams failed", lambda f: _failed(of(f)["failed"])),
        (f"{size:,} Watch burst: all have first status", lambda f: f"{of(f)['first_all_s']:.2f} s"),
        (
            f"{size:,} watchers: change seen p50 / p99 / max",
            lambda f: _ms(of(f), "p50_ms", "p99_ms", "max_ms") + _missing(of(f)),
        ),
        (f"{size:,} watchers: RSS per watcher", lambda f: f"{of(f)['kib_per_watcher']:.1f} KiB"),
        (f"{size:,} watchers: threads", lambda f: str(of(f)["threads"])),
        (
            f"{size:,} watchers: server CPU per delivered update",
            lambda f: f"{of(f)['cpu_us_per_update']:.1f} µs",
        ),
        (f"{size:,} watchers: Check p50 meanwhile", lambda f: f"{of(f)['check_ms']:.2f} ms"),
    ]


def _ms(figures: dict[str, Any], *keys: str) -> str:
    return " / ".join(f"{figures[key]:.2f}" for key in keys) + " ms"


def _failed(failed: dict[str, int]) -> str:
    return ", ".join(f"{count} {code}" for code, count in failed.items()) or "0"


def _missing(figures: dict[str, Any]) -> str:
    return f" ({figures['missing']} never saw it)" if figures["missing"] else ""


if __name__ == "__main__":
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    main()
