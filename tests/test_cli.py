"""The petsage-grpc command line: version, help, settings from flags and env, start-up errors.

Every start-up error is one line on stderr: a usage error exits 2, any other error exits 1."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys

import grpc
import pytest

from petsage_grpc import __version__
from petsage_grpc.health import NOT_SERVING, SERVING
from tests.helpers import CLIProcess, check, free_port, run_cli, start_server, wait_until


def test_version_prints_the_package_version():
    result = run_cli("--version")
    assert result.returncode == 0
    assert result.stdout == f"petsage-grpc {__version__}\n"


def test_python_dash_m_runs_the_same_cli():
    result = subprocess.run(
        [sys.executable, "-m", "petsage_grpc", "--version"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.stdout == f"petsage-grpc {__version__}\n"


def test_serve_help_names_each_flag_with_its_env_var():
    result = run_cli("serve", "--help")
    assert result.returncode == 0
    for flag, env in [
        ("--host", "PETSAGE_HOST"),
        ("--port", "PETSAGE_PORT"),
        ("--drain-delay", "PETSAGE_DRAIN_DELAY"),
        ("--grace-period", "PETSAGE_GRACE_PERIOD"),
        ("--log-level", "PETSAGE_LOG_LEVEL"),
        ("--no-reflection", "PETSAGE_REFLECTION"),
    ]:
        assert flag in result.stdout
        assert env in result.stdout


def test_no_command_is_a_usage_error():
    result = run_cli()
    assert result.returncode == 2
    assert "serve" in result.stderr


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["serve", "--port", "abc"], "--port"),
        (["serve", "--port", "70000"], "--port"),
        (["serve", "--drain-delay", "soon"], "--drain-delay"),
        (["serve", "--grace-period", "-1"], "--grace-period"),
        (["serve", "--log-level", "loud"], "--log-level"),
        (["serve", "--no-such-flag"], "--no-such-flag"),
        (["launch"], "launch"),
    ],
)
def test_bad_flag_is_a_usage_error_naming_it(args, named):
    result = run_cli(*args)
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 1, lines
    assert named in lines[0]
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("env", "value"),
    [
        ("PETSAGE_PORT", "http"),
        ("PETSAGE_DRAIN_DELAY", "1 hour"),
        ("PETSAGE_REFLECTION", "maybe"),
        ("PETSAGE_LOG_LEVEL", "verbose"),
    ],
)
def test_bad_env_value_is_a_usage_error_naming_the_variable(env, value):
    result = run_cli("serve", env={env: value})
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 1, lines
    assert env in lines[0]


def test_port_in_use_is_a_one_line_error():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli("serve", "--host", "127.0.0.1", "--port", str(port))
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"petsage-grpc: error: cannot listen on 127.0.0.1:{port}: Address already in use"
    ]


def test_port_of_another_petsage_server_is_refused(processes):
    first = start_server()
    processes.append(first)
    port = first.wait_for_port()
    result = run_cli("serve", "--host", "127.0.0.1", "--port", str(port))
    assert result.returncode == 1
    assert "Address already in use" in result.stderr


def test_unresolvable_host_is_a_one_line_error():
    result = run_cli("serve", "--host", "no-such-host.invalid", "--port", "0")
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert len(lines) == 1, lines
    assert "no-such-host.invalid" in lines[0]


def test_address_not_on_this_machine_is_a_one_line_error():
    result = run_cli("serve", "--host", "192.0.2.1", "--port", "0")  # TEST-NET-1: never local
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert len(lines) == 1, lines
    assert "cannot listen on 192.0.2.1:0" in lines[0]


def test_env_fills_in_what_flags_leave_out(processes):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        process = CLIProcess(
            ["serve", "--port", "0"],
            env={"PETSAGE_HOST": "127.0.0.1", "PETSAGE_PORT": str(busy)},
        )
        processes.append(process)
        port = process.wait_for_port()
    assert process.wait_for_line(r"serving on 127\.0\.0\.1:")
    assert port != busy
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        assert check(channel, "") == SERVING


def test_serve_on_ipv6_loopback(processes):
    process = CLIProcess(["serve", "--host", "::1", "--port", "0"])
    processes.append(process)
    port = process.wait_for_port()
    assert process.wait_for_line(r"serving on \[::1\]:")
    with grpc.insecure_channel(f"[::1]:{port}") as channel:
        assert check(channel, "") == SERVING


def serving(port: int) -> bool:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        try:
            return check(channel, "") == SERVING
        except grpc.RpcError:
            return False


def test_log_level_warning_hides_info_lines(processes):
    port = free_port()
    process = CLIProcess(
        ["serve", "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
    )
    processes.append(process)
    wait_until(lambda: serving(port), what="the server to serve")
    process.send()
    assert process.wait() == 0
    assert process.lines == []


@pytest.mark.parametrize(
    ("toml", "named"),
    [
        ("port = = 1\n", "invalid TOML"),
        ('[[check]]\nname = "mail"\nkind = "smtp"\ntarget = "x:25"\n', "kind: unknown kind 'smtp'"),
    ],
)
def test_bad_config_file_is_a_usage_error_pointing_at_the_problem(tmp_path, toml, named):
    path = tmp_path / "petsage.toml"
    path.write_text(toml)
    result = run_cli("serve", "--config", str(path))
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"petsage-grpc: error: {path}: ")
    assert named in lines[0]


@pytest.mark.parametrize(
    ("target", "named"),
    [
        ("no_such_module:check", "cannot import 'no_such_module'"),
        ("tests.apps.checks:absent", "has no 'absent'"),
        ("tests.apps.checks:not_async", "is not an async function"),
    ],
)
def test_python_check_that_cannot_be_set_up_is_a_usage_error(target, named):
    result = run_cli("serve", "--port", "0", "--check", f"name=app,kind=python,target={target}")
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 1, lines
    assert "check 'app'" in lines[0] and named in lines[0]


def test_bad_check_flag_is_a_usage_error():
    result = run_cli("serve", "--check", "name=db,kind=tcp")
    assert result.returncode == 2
    assert len(result.stderr.splitlines()) == 1
    assert "target: is missing" in result.stderr


def test_check_flag_drives_readiness(processes, tmp_path):
    drain = tmp_path / "drain"
    process = start_server(
        "--check", f"name=drain,kind=file,target={drain},interval=50ms,failure_threshold=1"
    )
    processes.append(process)
    port = process.wait_for_port()
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        wait_until(lambda: check(channel, "readiness") == SERVING, what="readiness")
        drain.touch()
        process.wait_for_line(
            r"readiness NOT_SERVING: required check 'drain' fails: the file exists"
        )
        assert check(channel, "readiness") == NOT_SERVING
        assert check(channel, "liveness") == SERVING


def test_crash_report_reaches_stderr(processes):
    # grpc core's fd 2 goes to /dev/null; a fatal signal's Python traceback must not.
    process = start_server()
    processes.append(process)
    process.wait_for_port()
    process.send(signal.SIGSEGV)
    process.wait_for_line("Fatal Python error: Segmentation fault")
    process.wait_for_line(r'File ".*", line \d+')


def test_kubernetes_service_link_variable_is_a_warning_not_an_error(processes):
    process = CLIProcess(
        ["serve", "--host", "127.0.0.1", "--port", "0"],
        env={"PETSAGE_PORT": "tcp://10.96.0.12:50051"},
    )
    processes.append(process)
    process.wait_for_line("ignoring PETSAGE_PORT=tcp://10.96.0.12:50051: a Kubernetes service link")
    process.wait_for_port()


def test_file_in_the_working_directory_never_shadows_a_module_the_server_needs(processes, tmp_path):
    (tmp_path / "h11.py").write_text("raise RuntimeError('shadowed')\n")  # the admin port's parser
    (tmp_path / "mychecks.py").write_text("async def ok():\n    return True\n")
    process = CLIProcess(
        ["serve", "--host", "127.0.0.1", "--port", "0", "--admin-port", "0",
         "--check", "name=mine,kind=python,target=mychecks:ok"],
        cwd=tmp_path,
    )  # fmt: skip
    processes.append(process)
    process.wait_for_line("admin HTTP port on")
    process.wait_for_line("check 'mine' \\(python\\) passes")
