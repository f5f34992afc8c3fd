"""Soak: one server with TLS, the admin port and dependency checks against local dependencies,
under a steady mix of health traffic while faults are injected on a schedule; then a table of
what held, and the server's footprint against its baseline.

Usage: python bench/soak.py [--seconds 300] [--out bench/results/soak.md]

The mix: Check over TLS at a few hundred a second, 1,000 Watch streams of readiness on the
health-only port with churn (some cancelled and reopened every second), SmokeTest with run_checks,
/metrics scrapes and /readyz probes. The faults, each on its own clock: the tcp dependency
stopped and restarted, a trickling HTTP dependency (an optional check), the TLS files rotated
(once to an expired pair, which must not be served), 64 idle admin sockets, Watch clients that
never read, a burst of malformed frames, a Watch client SIGKILLed mid-stream. Every target is on
127.0.0.1; every loop is bounded by the run's length; the run stops by itself.

Exit 0 when every assertion holds: no failed call outside the faults' own, every readiness change
seen by every watcher alive across it, readiness matching the dependency within one interval,
RSS, open files and threads back to their baseline within the stated margins.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import grpc  # noqa: E402
from cryptography.x509.oid import ExtendedKeyUsageOID  # noqa: E402
from grpc_health.v1 import health_pb2, health_pb2_grpc  # noqa: E402

from petsage_grpc._gen.petsage.v1 import smoke_pb2, smoke_pb2_grpc  # noqa: E402
from tests.apps.dependencies import Listener, Trickler  # noqa: E402
from tests.certs import SERVER_NAME, Certs, make_certs  # noqa: E402
from tests.helpers import CLIProcess, free_port, open_never_reading_watch  # noqa: E402

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
INTERVAL = 0.5  # of the tcp check: readiness must follow the dependency within one interval
WATCHERS = 1000
MARGINS = {"rss_mib": 25.0, "fds": 8, "threads": 4, "tasks": 5}


@dataclass
class Tally:
    """Calls of one kind: how many, and the failures that were not a fault's own."""

    calls: int = 0
    failures: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def ok(self) -> None:
        with self.lock:
            self.calls += 1

    def failed(self, why: str) -> None:
        with self.lock:
            self.calls += 1
            self.failures.append(why)


def footprint(pid: int, admin_port: int) -> dict[str, float]:
    """The server's RSS, open files and threads (from /proc), and its event loop's tasks (from
    its own /metrics)."""
    status = Path(f"/proc/{pid}/status").read_text()
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    url = f"http://127.0.0.1:{admin_port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as answer:
        metrics = answer.read().decode()
    tasks = next(
        float(line.split()[1])
        for line in metrics.splitlines()
        if line.startswith("petsage_event_loop_tasks ")
    )
    return {
        "rss_mib": int(fields["VmRSS"].split()[0]) / 1024,
        "fds": len(list(Path(f"/proc/{pid}/fd").iterdir())),
        "threads": int(fields["Threads"]),
        "tasks": tasks,
    }


class Watchers:
    """WATCHERS Watch streams of readiness on one grpc.aio client in a thread of its own, with
    churn; each stream keeps the times at which it received each status."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.loop = asyncio.new_event_loop()
        self.streams: dict[int, dict[str, object]] = {}
        self.failures: list[str] = []
        self._next = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def start(self) -> None:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._open_all(), self.loop).result(60)

    async def _open_all(self) -> None:
        # Connections of their own (not one shared subchannel): 125 streams each, well inside
        # the server's 1,000 per connection even while churned streams are being replaced.
        own = [("grpc.use_local_subchannel_pool", 1)]
        self.channels = [grpc.aio.insecure_channel(self.address, options=own) for _ in range(8)]
        for _ in range(WATCHERS):
            self._open()

    def _open(self) -> None:
        number = self._next
        self._next += 1
        channel = self.channels[number % len(self.channels)]
        call = health_pb2_grpc.HealthStub(channel).Watch(
            health_pb2.HealthCheckRequest(service="readiness")
        )
        record: dict[str, object] = {"opened": time.monotonic(), "seen": [], "call": call}
        self.streams[number] = record
        record["task"] = asyncio.ensure_future(self._follow(number, call, record))

    async def _follow(self, number: int, call: object, record: dict[str, object]) -> None:
        seen = record["seen"]
        assert isinstance(seen, list)
        try:
            async for response in call:  # type: ignore[attr-defined]
                seen.append((time.monotonic(), response.status))
        except grpc.aio.AioRpcError as error:
            if error.code() != grpc.StatusCode.CANCELLED and not self._stop.is_set():
                self.failures.append(f"{error.code().name}: {error.details()}")
        record["closed"] = time.monotonic()

    def churn(self, count: int) -> None:
        async def step() -> None:
            live = [
                n for n, r in self.streams.items() if "closed" not in r and "cancelled" not in r
            ]
            for number in random.sample(live, min(count, len(live))):
                record = self.streams[number]
                record["cancelled"] = time.monotonic()
                record["call"].cancel()  # type: ignore[attr-defined]
                self._open()

        asyncio.run_coroutine_threadsafe(step(), self.loop).result(30)

    def stop(self) -> None:
        self._stop.set()

        async def close() -> None:
            for record in self.streams.values():
                record["call"].cancel()  # type: ignore[attr-defined]
            await asyncio.sleep(0.2)
            for channel in self.channels:
                await channel.close()

        asyncio.run_coroutine_threadsafe(close(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(30)

    def missed(self, changes: list[tuple[float, int]], settle: float) -> int:
        """How many (stream, change) pairs a stream alive across the change did not receive."""
        missing = 0
        for at, status in changes:
            for record in list(self.streams.values()):
                opened = float(record["opened"])  # type: ignore[arg-type]
                ended = min(
                    float(record.get("cancelled", record.get("closed", 1e18))),  # type: ignore[arg-type]
                    1e18,
                )
                if opened < at - 1.0 and ended > at + settle:
                    seen = record["seen"]
                    assert isinstance(seen, list)
                    if not any(t >= at - 0.05 and s == status for t, s in seen):
                        missing += 1
        return missing


def run(seconds: float) -> tuple[list[tuple[str, str, str]], bool]:
    work = Path(tempfile.mkdtemp(prefix="petsage-soak-"))
    rows: list[tuple[str, str, str]] = []
    holds = True
    try:
        certs_dir = work / "certs"
        certs_dir.mkdir()
        certs = make_certs(certs_dir)
        served = work / "served"
        served.mkdir()
        shutil.copy(certs.server.cert, served / "tls.crt")
        shutil.copy(certs.server.key, served / "tls.key")
        with Listener() as database, Trickler(pause=0.3) as slow:
            main_port, health_port, admin_port = free_port(), free_port(), free_port()
            server = CLIProcess(
                [
                    "serve",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(main_port),
                    "--health-port",
                    str(health_port),
                    "--admin-port",
                    str(admin_port),
                    "--tls-cert",
                    str(served / "tls.crt"),
                    "--tls-key",
                    str(served / "tls.key"),
                    "--tls-reload-interval",
                    "1s",
                    "--drain-delay",
                    "0.5",
                    "--grace-period",
                    "2",
                    "--health-port-max-watch-streams",
                    str(WATCHERS * 2),
                    "--check",
                    f"name=db,kind=tcp,target=127.0.0.1:{database.port},"
                    f"interval={INTERVAL},timeout=0.25,failure_threshold=1",
                    "--check",
                    f"name=slow,kind=http,target=http://127.0.0.1:{slow.port}/,"
                    "interval=1,timeout=0.5,required=false",
                    "--log-level",
                    "warning",
                ]
            )
            try:
                holds = _soak(seconds, server, work, certs, served, database, main_port,
                              health_port, admin_port, rows)  # fmt: skip
            finally:
                server.send(signal.SIGTERM)
                code = server.wait(timeout=30)
                rows.append(("server exit code after SIGTERM", "0", str(code)))
                holds = holds and code == 0
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return rows, holds


def _soak(
    seconds: float,
    server: CLIProcess,
    work: Path,
    certs: Certs,
    served: Path,
    database: Listener,
    main_port: int,
    health_port: int,
    admin_port: int,
    rows: list[tuple[str, str, str]],
) -> bool:
    ready_deadline = time.monotonic() + 30
    plain = grpc.insecure_channel(f"127.0.0.1:{health_port}")
    while True:
        try:
            status = (
                health_pb2_grpc.HealthStub(plain)
                .Check(health_pb2.HealthCheckRequest(service="readiness"), timeout=1)
                .status
            )
            if status == SERVING:
                break
        except grpc.RpcError:
            pass
        if time.monotonic() > ready_deadline:
            raise RuntimeError("the server did not become ready")
        time.sleep(0.05)
    ca = certs.ca.read_bytes()
    secure = grpc.secure_channel(
        f"127.0.0.1:{main_port}",
        grpc.ssl_channel_credentials(ca),
        options=[("grpc.ssl_target_name_override", "server.petsage.test")],
    )
    watchers = Watchers(f"127.0.0.1:{health_port}")
    watchers.start()

    checks, smokes, scrapes, probes = Tally(), Tally(), Tally(), Tally()
    stop = threading.Event()
    end = time.monotonic() + seconds

    def check_load() -> None:  # a few hundred a second, over TLS
        stub = health_pb2_grpc.HealthStub(secure)
        request = health_pb2.HealthCheckRequest(service="liveness")
        while not stop.is_set():
            try:
                stub.Check(request, timeout=5)
                checks.ok()
            except grpc.RpcError as error:
                checks.failed(error.code().name)
            time.sleep(0.004)

    def smoke_load() -> None:
        stub = smoke_pb2_grpc.SmokeServiceStub(secure)
        while not stop.wait(0.5):
            try:
                stub.SmokeTest(smoke_pb2.SmokeTestRequest(run_checks=True), timeout=5)
                smokes.ok()
            except grpc.RpcError as error:
                smokes.failed(error.code().name)

    def admin_load() -> None:
        while not stop.wait(0.5):
            for path, tally in (("/metrics", scrapes), ("/readyz", probes)):
                try:
                    url = f"http://127.0.0.1:{admin_port}{path}"
                    with urllib.request.urlopen(url, timeout=5) as answer:
                        answer.read()
                    tally.ok()
                except urllib.error.HTTPError as error:
                    if path == "/readyz" and error.code == 503:
                        tally.ok()  # NOT_SERVING while the database is away: an answer
                    else:
                        tally.failed(f"HTTP {error.code}")
                except OSError as error:
                    tally.failed(str(error))

    loads = [threading.Thread(target=f, daemon=True) for f in (check_load, check_load,
                                                                smoke_load, admin_load)]  # fmt: skip
    for each in loads:
        each.start()
    time.sleep(2.0)
    baseline = footprint(server.proc.pid, admin_port)  # the steady mix, before any fault

    changes: list[tuple[float, int]] = []  # (when injected, readiness expected)
    lags: list[float] = []
    reference = health_pb2_grpc.HealthStub(plain).Watch(
        health_pb2.HealthCheckRequest(service="readiness"), timeout=seconds + 60
    )
    seen: list[tuple[float, int]] = []

    def follow_reference() -> None:
        try:
            for response in reference:
                seen.append((time.monotonic(), response.status))
        except grpc.RpcError:
            pass  # cancelled at the end

    threading.Thread(target=follow_reference, daemon=True).start()

    def expect(status: int, since: float) -> None:
        deadline = since + INTERVAL + 0.25 + 1.0  # one interval, the timeout, and slack
        while time.monotonic() < deadline:
            arrived = [t for t, s in seen if s == status and t >= since]
            if arrived:
                lags.append(arrived[0] - since)
                return
            time.sleep(0.01)
        lags.append(float("inf"))

    faults = 0
    handshakes: list[bool] = []
    next_rotation = time.monotonic() + max(seconds / 5, 5)
    rotations = 0
    step = 0
    while time.monotonic() < end:
        step += 1
        watchers.churn(20)
        now = time.monotonic()
        if step % 6 == 3 and now + 4 < end:  # the database goes away, then comes back
            port = database.port
            database.__exit__()
            at = time.monotonic()
            changes.append((at, NOT_SERVING))
            expect(NOT_SERVING, at)
            time.sleep(1.0)
            database = Listener(port).__enter__()
            at = time.monotonic()
            changes.append((at, SERVING))
            expect(SERVING, at)
            faults += 1
        elif step % 6 == 1:  # 64 idle admin sockets, held for two seconds
            idle = [socket.create_connection(("127.0.0.1", admin_port)) for _ in range(64)]
            time.sleep(2.0)
            for sock in idle:
                sock.close()
            faults += 1
        elif step % 6 == 5:  # never-reading watchers, a malformed burst, a killed client
            stuck = [open_never_reading_watch(health_port, "readiness") for _ in range(5)]
            for _ in range(50):
                with socket.create_connection(("127.0.0.1", main_port), timeout=5) as bad:
                    bad.sendall(random.randbytes(512))
            flood = subprocess.Popen(
                [sys.executable, "-m", "tests.apps.flood", f"127.0.0.1:{health_port}", "2",
                 "100", "30"],
                cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
            )  # fmt: skip
            assert flood.stdout is not None
            flood.stdout.readline()  # "flooding": every stream has its first status
            flood.kill()
            flood.wait(10)
            for sock in stuck:
                sock.close()
            faults += 1
        if time.monotonic() >= next_rotation:  # rotate the TLS files; once to an expired pair
            rotations += 1
            authority = certs.authority
            if rotations == 2:  # must be refused: the last good pair stays served
                pair = authority.issue(
                    SERVER_NAME, ExtendedKeyUsageOID.SERVER_AUTH, f"expired{rotations}",
                    start=datetime.timedelta(days=-2), end=datetime.timedelta(days=-1),
                )  # fmt: skip
            else:
                pair = authority.server(f"server{rotations}")
            for source, name in ((pair.cert, "tls.crt"), (pair.key, "tls.key")):
                shutil.copy(source, served / f"{name}.new")
                (served / f"{name}.new").replace(served / name)
            time.sleep(1.5)  # past the reload interval: a new connection's handshake must work
            handshakes.append(_new_tls_check(main_port, ca))
            next_rotation = time.monotonic() + max(seconds / 5, 5)
        time.sleep(1.0)

    stop.set()
    for each in loads:
        each.join(30)
    database.__exit__()
    time.sleep(6.0)  # let the server drop what the faults and the load held (spare senders: 5 s)
    final = footprint(server.proc.pid, admin_port)  # the watchers still open, as at the baseline
    missing = watchers.missed(changes, settle=INTERVAL + 1.5)
    watchers.stop()
    reference.cancel()
    secure.close()
    plain.close()
    refused = sum("TLS files not reloaded" in line for line in server.read_available())

    holds = True

    def row(what: str, expected: str, got: str, ok: bool) -> None:
        nonlocal holds
        holds = holds and ok
        rows.append((what, expected, got + ("" if ok else "  FAILED")))

    row("faults injected", "> 0", str(faults), faults > 0)
    row("TLS rotations (one to an expired pair)", "> 1", str(rotations), rotations > 1)
    row("the expired pair refused (warnings logged)", "> 0", str(refused), refused > 0)
    row("new TLS connections after each rotation", "all served",
        f"{sum(handshakes)} of {len(handshakes)}", all(handshakes))  # fmt: skip
    for name, tally in (("Check over TLS", checks), ("SmokeTest run_checks", smokes),
                        ("/metrics scrapes", scrapes), ("/readyz probes", probes)):  # fmt: skip
        row(f"{name}: failed of {tally.calls}", "0", str(len(tally.failures)),
            not tally.failures and tally.calls > 0)  # fmt: skip
    kinds = sorted(set(watchers.failures))
    row("Watch streams failed (not cancelled by the churn)", "0",
        f"{len(watchers.failures)} {kinds[:3]}" if kinds else "0", not watchers.failures)  # fmt: skip
    row("readiness changes missed by a live watcher", "0", str(missing), missing == 0)
    worst = max(lags) if lags else 0.0
    row(f"readiness follows the dependency ({len(lags)} changes): worst lag", f"<= {INTERVAL + 1.25:g}s",
        f"{worst:.2f}s (median {statistics.median(lags) if lags else 0:.2f}s)",
        worst <= INTERVAL + 1.25)  # fmt: skip
    for key, margin in MARGINS.items():
        grown = final[key] - baseline[key]
        row(f"{key} at the end vs baseline", f"+{margin:g} at most",
            f"{baseline[key]:.1f} -> {final[key]:.1f}", grown <= margin)  # fmt: skip
    return holds


def _new_tls_check(port: int, ca: bytes) -> bool:
    """Whether a Check on a new TLS connection (a new handshake) is answered."""
    credentials = grpc.ssl_channel_credentials(ca)
    options = [("grpc.ssl_target_name_override", SERVER_NAME)]
    with grpc.secure_channel(f"127.0.0.1:{port}", credentials, options=options) as channel:
        try:
            health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service="liveness"), timeout=5
            )
        except grpc.RpcError:
            return False
    return True


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=300.0)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    started = time.monotonic()
    rows, holds = run(args.seconds)
    took = time.monotonic() - started
    width = max(len(r[0]) for r in rows)
    lines = [
        f"Soak of {args.seconds:g}s ({took:.0f}s in all), 127.0.0.1 only: "
        + ("every assertion held" if holds else "SOME ASSERTIONS FAILED"),
        "",
        "| what | expected | measured |",
        "|---|---|---|",
        *(f"| {what} | {expected} | {got} |" for what, expected, got in rows),
    ]
    text = "\n".join(lines) + "\n"
    print(text, end="")
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    del width
    return 0 if holds else 1


if __name__ == "__main__":
    sys.exit(main())
