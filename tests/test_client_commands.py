"""probe, watch, list and smoke, each run as a subprocess against real servers on loopback: a
PetSage server, and servers built from grpcio-health-checking's reference servicer."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health, health_pb2

from petsage_grpc.checks.spec import CheckSpec
from petsage_grpc.health import NOT_SERVING
from petsage_grpc.smoke import instance_name
from tests.certs import SERVER_NAME, Certs, make_certs
from tests.helpers import CLIProcess, ThreadedServer, make_config, run_cli

FAST = ("-connect-timeout", "300ms", "-rpc-timeout", "300ms")


class RecordingServicer(health.HealthServicer):
    """The reference servicer, remembering the metadata of each Check."""

    def __init__(self) -> None:
        super().__init__()
        self.metadata: list[dict[str, str]] = []

    def Check(self, request: Any, context: grpc.ServicerContext) -> Any:
        self.metadata.append(dict(context.invocation_metadata()))
        return super().Check(request, context)


class Reference:
    """grpcio-health-checking's reference servicer on grpc.server(ThreadPoolExecutor)."""

    def __init__(self, credentials: grpc.ServerCredentials | None = None) -> None:
        self.servicer = RecordingServicer()
        self.server = grpc.server(futures.ThreadPoolExecutor(4))
        from grpc_health.v1 import health_pb2_grpc

        health_pb2_grpc.add_HealthServicer_to_server(self.servicer, self.server)
        if credentials is None:
            self.port = self.server.add_insecure_port("127.0.0.1:0")
        else:
            self.port = self.server.add_secure_port("127.0.0.1:0", credentials)
        self.server.start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.server.stop(None)


@pytest.fixture
def reference() -> Iterator[Reference]:
    server = Reference()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return make_certs(tmp_path_factory.mktemp("certs"))


def probe(*args: str) -> tuple[int, list[str]]:
    result = run_cli("probe", *args)
    assert result.stdout == ""
    return result.returncode, result.stderr.splitlines()


# --- probe: the answers -------------------------------------------------------------------


def test_probe_serving_petsage(server):
    assert probe("-addr", server.address) == (0, ["status: SERVING"])


def test_probe_serving_reference(reference):
    assert probe("-addr", reference.address) == (0, ["status: SERVING"])


def test_probe_named_service(server):
    assert probe("-addr", server.address, "-service", "readiness") == (0, ["status: SERVING"])
    assert probe(f"-addr={server.address}", "--service=liveness") == (0, ["status: SERVING"])


def test_probe_not_serving_is_exit_4(reference):
    reference.servicer.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
    assert probe("-addr", reference.address) == (
        4,
        ['service unhealthy (responded with "NOT_SERVING")'],
    )


def test_probe_not_serving_petsage_is_exit_4(server):
    server.server.monitor.enter_maintenance()
    assert probe("-addr", server.address, "-service", "readiness")[0] == 4
    assert probe("-addr", server.address, "-service", "liveness")[0] == 0


def test_probe_unknown_service_is_exit_3(server):
    code, lines = probe("-addr", server.address, "-service", "no.such.Service")
    assert code == 3
    assert lines == [
        "error: health rpc failed: rpc error: code = NotFound desc = unknown service "
        "'no.such.Service'"
    ]


def test_probe_nothing_listening_is_exit_2():
    with socket.socket() as probe_socket:
        probe_socket.bind(("127.0.0.1", 0))
        port = probe_socket.getsockname()[1]
    code, lines = probe("-addr", f"127.0.0.1:{port}", *FAST)
    assert code == 2
    assert lines == [f'timeout: failed to connect service "127.0.0.1:{port}" within 300ms']


def test_probe_server_that_accepts_but_never_speaks_is_a_connect_timeout():
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1]
        code, lines = probe("-addr", f"127.0.0.1:{port}", *FAST)
    assert code == 2
    assert lines[0].startswith("timeout: failed to connect service")


def test_probe_server_that_never_answers_the_rpc_is_an_rpc_timeout():
    release = threading.Event()

    class Hanging(health.HealthServicer):
        def Check(self, request: Any, context: grpc.ServicerContext) -> Any:
            release.wait(30)
            return super().Check(request, context)

    server = grpc.server(futures.ThreadPoolExecutor(4))
    from grpc_health.v1 import health_pb2_grpc

    health_pb2_grpc.add_HealthServicer_to_server(Hanging(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        code, lines = probe("-addr", f"127.0.0.1:{port}", *FAST)
    finally:
        release.set()
        server.stop(None)
    assert code == 3
    assert lines == ["timeout: health rpc did not complete within 300ms"]


def test_probe_of_a_server_without_health_is_exit_3():
    server = grpc.server(futures.ThreadPoolExecutor(1))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        code, lines = probe("-addr", f"127.0.0.1:{port}")
    finally:
        server.stop(None)
    assert (code, lines) == (
        3,
        ["error: this server does not implement the grpc health protocol (grpc.health.v1.Health)"],
    )


# --- probe: flags -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((), "error: -addr not specified"),
        (("-addr", "x:1", "-connect-timeout", "0s"), "-connect-timeout must be greater than zero"),
        (("-addr", "x:1", "-rpc-timeout", "-1s"), "-rpc-timeout"),
        (("-addr", "x:1", "-rpc-timeout", "soon"), "invalid duration"),
        (("-addr", "x:1", "-tls-no-verify"), "specified -tls-no-verify without specifying -tls"),
        (("-addr", "x:1", "-tls-ca-cert", "ca.pem"), "specified -tls-ca-cert without"),
        (
            ("-addr", "x:1", "-tls", "-tls-client-cert", "c.pem"),
            "specified -tls-client-cert without specifying -tls-client-key",
        ),
        (("-addr", "x:1", "-tls", "-tls-no-verify", "-tls-ca-cert", "c"), "cannot specify"),
        (("-addr", "x:1", "-rpc-header", "no-colon"), "invalid RPC header"),
        (("-addr", "x:1", "-bogus"), "unrecognized arguments: -bogus"),
        (("-addr", "x:1", "-tls=maybe"), "invalid boolean"),
    ],
)
def test_probe_bad_flags_are_exit_1_with_one_line(args, message):
    code, lines = probe(*args)
    assert code == 1
    assert len(lines) == 1, lines
    assert message in lines[0]


def test_probe_help_lists_the_flags():
    result = run_cli("probe", "-h")
    assert result.returncode == 0
    for flag in ("-addr", "-service", "-connect-timeout", "-rpc-timeout", "-tls-server-name"):
        assert flag in result.stdout


def test_probe_sends_the_user_agent(reference):
    code, _ = probe("-addr", reference.address, "-user-agent", "kubelet-probe")
    assert code == 0
    assert reference.servicer.metadata[-1]["user-agent"].startswith("kubelet-probe ")


def test_probe_sends_rpc_headers(reference):
    code, _ = probe(
        "-addr", reference.address, "-rpc-header", "x-team: pets", "-rpc-header", "X-Trace:abc",
        "-gzip",
    )  # fmt: skip
    assert code == 0
    seen = reference.servicer.metadata[-1]
    assert seen["x-team"] == "pets"
    assert seen["x-trace"] == "abc"


def test_probe_verbose_says_what_it_does(server):
    code, lines = probe("-addr", server.address, "-v")
    assert code == 0
    assert lines[0] == "parsed options:"
    assert any(line.startswith("connection established (took ") for line in lines)
    assert lines[-1] == "status: SERVING"


# --- probe: TLS ---------------------------------------------------------------------------


def tls_reference(certs: Certs, require_client: bool = False) -> Reference:
    credentials = grpc.ssl_server_credentials(
        [certs.server.read()],
        root_certificates=certs.ca.read_bytes() if require_client else None,
        require_client_auth=require_client,
    )
    return Reference(credentials)


def test_probe_tls_with_a_ca(certs):
    server = tls_reference(certs)
    try:
        ca = str(certs.ca)
        assert probe("-addr", server.address, "-tls", "-tls-ca-cert", ca)[0] == 0
        named = ("-tls-server-name", SERVER_NAME)
        assert probe("-addr", server.address, "-tls", "-tls-ca-cert", ca, *named)[0] == 0
    finally:
        server.stop()


def test_probe_tls_wrong_server_name_fails_to_connect_with_one_line(certs):
    server = tls_reference(certs)
    try:
        code, lines = probe(
            "-addr", server.address, "-tls", "-tls-ca-cert", str(certs.ca),
            "-tls-server-name", "wrong.name", *FAST,
        )  # fmt: skip
    finally:
        server.stop()
    assert code == 2
    assert len(lines) == 1 and lines[0].startswith("timeout: failed to connect service")


def test_probe_tls_to_a_plaintext_server_fails_to_connect(server, certs):
    code, _ = probe("-addr", server.address, "-tls", "-tls-ca-cert", str(certs.ca), *FAST)
    assert code == 2


def test_probe_tls_no_verify_trusts_the_servers_certificate(certs):
    server = tls_reference(certs)
    try:
        assert probe("-addr", server.address, "-tls", "-tls-no-verify")[0] == 0
    finally:
        server.stop()


def test_probe_mtls_with_a_client_cert(certs):
    server = tls_reference(certs, require_client=True)
    try:
        client = (
            "-tls-client-cert",
            str(certs.client.cert),
            "-tls-client-key",
            str(certs.client.key),
        )
        args = ("-addr", server.address, "-tls", "-tls-ca-cert", str(certs.ca))
        assert probe(*args, *client)[0] == 0
        assert probe(*args, *FAST)[0] == 2  # no client certificate: the handshake fails
    finally:
        server.stop()


def test_probe_unreadable_ca_file_is_exit_1(server, tmp_path: Path):
    code, lines = probe("-addr", server.address, "-tls", "-tls-ca-cert", str(tmp_path / "none"))
    assert code == 1
    assert "cannot read CA certificates" in lines[0]


# --- watch --------------------------------------------------------------------------------


def test_watch_follows_the_status_until_the_stream_ends(processes, server):
    process = CLIProcess(
        ["watch", "-addr", server.address, "-service", "readiness"], merge_stdout=True
    )
    processes.append(process)
    process.wait_for_line(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ status: SERVING$")
    server.server.monitor.enter_maintenance()
    process.wait_for_line(r"Z status: NOT_SERVING$")
    server.run(server.server.drain_and_stop())  # the stream ends with OK
    assert process.wait() == 4


def test_watch_ends_0_when_interrupted_while_serving(processes, server):
    process = CLIProcess(["watch", "-addr", server.address], merge_stdout=True)
    processes.append(process)
    process.wait_for_line("status: SERVING")
    process.send(signal.SIGINT)
    assert process.wait() == 0


def test_watch_of_a_reference_server(processes, reference):
    process = CLIProcess(["watch", "-addr", reference.address], merge_stdout=True)
    processes.append(process)
    process.wait_for_line("status: SERVING")
    reference.servicer.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
    process.wait_for_line("status: NOT_SERVING")
    process.send()
    assert process.wait() == 4


def test_watch_nothing_listening_is_exit_2():
    result = run_cli("watch", "-addr", "127.0.0.1:1", *FAST)
    assert result.returncode == 2


# --- list ---------------------------------------------------------------------------------


def test_list_prints_every_service_with_its_status(server):
    server.server.monitor.set("petsage.v1.SmokeService", NOT_SERVING)
    result = run_cli("list", "-addr", server.address)
    assert result.returncode == 0
    rows = [line.split() for line in result.stdout.splitlines()]
    assert rows == [
        ["SERVICE", "STATUS"],
        ['""', "SERVING"],
        ["liveness", "SERVING"],
        ["petsage.v1.SmokeService", "NOT_SERVING"],
        ["readiness", "SERVING"],
    ]


# --- smoke --------------------------------------------------------------------------------


def test_smoke_ok_prints_a_table(server):
    result = run_cli("smoke", "-addr", server.address)
    assert result.returncode == 0
    assert "OK" in result.stdout.splitlines()[0]
    assert "PetSage services are running smoothly!" in result.stdout
    rows = dict(line.split(None, 1) for line in result.stdout.splitlines() if line)
    assert rows["instance"] == instance_name()
    assert rows["started"].endswith("Z")


def test_smoke_json_is_the_response(server):
    from petsage_grpc import __version__

    result = run_cli("smoke", "--addr", server.address, "--json")
    assert result.returncode == 0
    body = json.loads(result.stdout)
    assert body["status"] == "SMOKE_STATUS_OK"
    assert body["version"] == __version__
    assert body["instance"] == instance_name()
    assert "startTime" in body
    assert body["checks"] == []


@pytest.fixture
def degraded(tmp_path: Path) -> Iterator[ThreadedServer]:
    """A server whose one optional check fails."""
    drain = tmp_path / "drain"
    drain.touch()
    spec = CheckSpec(name="cache", kind="file", target=str(drain), required=False)
    with ThreadedServer(make_config(checks=(spec,))) as running:
        yield running


def test_smoke_degraded_is_exit_5(degraded):
    result = run_cli("smoke", "-addr", degraded.address, "--deep")
    assert result.returncode == 5
    assert "DEGRADED" in result.stdout


def test_smoke_deep_lists_each_check(degraded):
    result = run_cli("smoke", "-addr", degraded.address, "--deep")
    check_row = next(line for line in result.stdout.splitlines() if line.startswith("cache"))
    assert check_row.split()[:4] == ["cache", "file", "no", "no"]
    assert check_row.endswith("the file exists")


def test_smoke_failing_is_exit_4(server):
    server.server.monitor.enter_maintenance()
    result = run_cli("smoke", "-addr", server.address)
    assert result.returncode == 4
    assert "FAILING" in result.stdout


@pytest.mark.parametrize(
    ("command", "missing"),
    [
        ("list", ["does not implement List"]),
        ("smoke", ["does not implement", "petsage.v1.SmokeService"]),
    ],
    ids=["list", "smoke"],
)
def test_command_against_a_server_without_its_service_is_exit_3(reference, command, missing):
    result = run_cli(command, "-addr", reference.address)
    assert result.returncode == 3
    for words in missing:
        assert words in result.stderr


@pytest.mark.parametrize("command", ["'probe'", "'smoke', '-each'"])
def test_client_commands_load_nothing_of_the_server(command):
    code = (
        f"import sys; from petsage_grpc.cli import main; main([{command}, '-addr', "
        "'127.0.0.1:1', '-connect-timeout', '1ms']); "
        "print(' '.join(sorted(sys.modules)))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=False
    )
    loaded = result.stdout.split()
    assert "petsage_grpc.commands" in loaded
    for unneeded in (
        "petsage_grpc.server",
        "petsage_grpc.monitor",
        "petsage_grpc.config",
    ):
        assert unneeded not in loaded


def test_probe_address_without_host_is_this_machine(server):
    port = server.address.rsplit(":", 1)[1]
    assert probe(f"-addr=:{port}") == (0, ["status: SERVING"])


@pytest.mark.parametrize("command", ["probe", "watch", "list", "smoke"])
def test_readme_documents_every_flag_of_the_client_commands(command):
    from petsage_grpc.commands.grpc_health_probe import build_parser
    from tests.helpers import ROOT

    readme = (ROOT / "README.md").read_text()
    flags = [
        flag
        for action in build_parser(command)._actions
        for flag in action.option_strings
        if not flag.startswith("--") and flag != "-h"
    ]
    assert "-each" in flags or command != "smoke"
    assert [flag for flag in flags if f"`{flag}" not in readme] == []
