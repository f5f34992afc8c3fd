"""What each signal does to a serving process: the stop signals are kept from the process's
first moment, SIGHUP re-reads the TLS files, SIGUSR1 dumps the threads' stacks, SIGUSR2 is
ignored; none of them is an undrained exit."""

from __future__ import annotations

import signal
from pathlib import Path

import grpc

from petsage_grpc.health import SERVING
from tests.certs import make_certs
from tests.helpers import CLIProcess, check, start_server, wait_until


def held(pid: int, signum: int) -> bool:
    """Whether the process blocks `signum` now (its SigBlk mask in /proc)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    mask = next(line.split()[1] for line in status.splitlines() if line.startswith("SigBlk:"))
    return bool(int(mask, 16) & (1 << (signum - 1)))


def test_sigterm_at_the_first_moment_it_can_be_taken_is_a_graceful_stop(processes):
    process = start_server()
    processes.append(process)
    # The moment the program holds SIGTERM, long before grpc is imported or the port is open.
    wait_until(lambda: held(process.proc.pid, signal.SIGTERM), timeout=5, what="SIGTERM held")
    process.send(signal.SIGTERM)
    assert process.wait() == 0
    assert any("received SIGTERM: shutting down" in line for line in process.lines)


def serving(process: CLIProcess, port: int) -> bool:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        return process.proc.poll() is None and check(channel, "liveness") == SERVING


def test_sighup_without_tls_only_logs(processes):
    process = start_server()
    processes.append(process)
    port = process.wait_for_port()
    process.send(signal.SIGHUP)
    process.wait_for_line("received SIGHUP: no TLS files to re-read")
    assert serving(process, port)


def test_sighup_re_reads_the_tls_files_at_once(processes, tmp_path):
    (tmp_path / "old").mkdir()
    (tmp_path / "new").mkdir()
    certs = make_certs(tmp_path / "old")
    served = tmp_path / "served"
    served.mkdir()
    (served / "tls.crt").write_bytes(certs.server.cert.read_bytes())
    (served / "tls.key").write_bytes(certs.server.key.read_bytes())
    process = start_server(
        "--tls-cert", str(served / "tls.crt"), "--tls-key", str(served / "tls.key"),
        "--tls-reload-interval", "3600",  # only the signal can explain a reload
    )  # fmt: skip
    processes.append(process)
    process.wait_for_port()
    renewed = make_certs(tmp_path / "new")
    (served / "tls.crt").write_bytes(renewed.server.cert.read_bytes())
    (served / "tls.key").write_bytes(renewed.server.key.read_bytes())
    process.send(signal.SIGHUP)
    process.wait_for_line("received SIGHUP: re-reading the TLS files")
    process.wait_for_line("TLS files changed")


def test_sigusr1_writes_every_threads_stack(processes):
    process = start_server()
    processes.append(process)
    port = process.wait_for_port()
    process.send(signal.SIGUSR1)
    process.wait_for_line(r"^(Current thread|Thread) 0x[0-9a-f]+")
    process.wait_for_line(r'File ".*", line \d+ in ')
    assert serving(process, port)


def test_sigusr2_is_ignored(processes):
    process = start_server()
    processes.append(process)
    port = process.wait_for_port()
    process.send(signal.SIGUSR2)
    process.wait_for_line("received SIGUSR2: ignored")
    assert serving(process, port)
