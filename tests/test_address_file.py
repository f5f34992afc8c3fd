"""`serve --address-file` and `probe -addr-file`: the server publishes the ports it really bound,
whole, and takes the file away when it stops; the client commands connect where it says."""

from __future__ import annotations

import json
import signal
import socket
from pathlib import Path

import pytest

from petsage_grpc.addresses import AddressFile, AddressFileError, Listener, connect_address, read
from petsage_grpc.config import Config
from tests.certs import SERVER_NAME, Certs, make_certs
from tests.helpers import WAIT, ThreadedServer, make_config, run_cli, start_server


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return make_certs(tmp_path_factory.mktemp("certs"))


def probe(*args: str) -> tuple[int, list[str]]:
    result = run_cli("probe", *args)
    return result.returncode, result.stderr.splitlines()


def test_serve_flag_publishes_the_ports_the_system_picked(tmp_path, processes):
    path = tmp_path / "addresses.json"
    process = start_server("--health-port", "0", "--admin-port", "0", "--address-file", str(path))
    processes.append(process)
    main = process.wait_for_port()
    health = int(process.wait_for_line(r"health-only plaintext port on \S+:(\d+)").group(1))
    admin = int(process.wait_for_line(r"admin HTTP port on \S+:(\d+)").group(1))
    assert read(str(path)) == {
        "main": Listener("127.0.0.1", main, "plaintext"),
        "health": Listener("127.0.0.1", health, "plaintext"),
        "admin": Listener("127.0.0.1", admin, "http"),
    }
    assert json.loads(path.read_text())["pid"] == process.proc.pid


def test_file_is_removed_once_the_server_has_stopped(tmp_path, processes):
    path = tmp_path / "addresses.json"
    process = start_server("--address-file", str(path))
    processes.append(process)
    process.wait_for_port()
    assert path.exists()
    process.send(signal.SIGTERM)
    assert process.wait() == 0
    assert list(tmp_path.iterdir()) == []


def test_a_stale_file_is_replaced_whole_and_no_temporary_file_stays(tmp_path):
    path = tmp_path / "addresses.json"
    path.write_text('{"pid": 1, "listeners": {"main": {"host": "h", "port": 1, "security": "x"}')
    with ThreadedServer(make_config(address_file=str(path))) as server:
        listeners = read(str(path))
        assert list(listeners) == ["main"]
        assert connect_address(listeners["main"]) == server.address
        assert [each.name for each in tmp_path.iterdir()] == ["addresses.json"]


def test_a_file_another_server_wrote_since_is_left_in_place(tmp_path):
    path = tmp_path / "addresses.json"
    ours = AddressFile(str(path))
    ours.publish({"main": Listener("127.0.0.1", 1, "plaintext")})
    AddressFile(str(path)).publish({"main": Listener("127.0.0.1", 2, "plaintext")})
    ours.remove()
    assert read(str(path))["main"].port == 2


def test_a_directory_that_cannot_take_the_file_stops_start_up_with_one_line(tmp_path):
    path = tmp_path / "missing" / "addresses.json"
    result = run_cli("serve", "--host", "127.0.0.1", "--port", "0", "--address-file", str(path))
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"petsage-grpc: error: cannot write the address file {path}: No such file or directory"
    ]


def test_a_directory_in_the_way_stops_start_up_with_one_line(tmp_path):
    result = run_cli("serve", "--host", "127.0.0.1", "--port", "0", "--address-file", str(tmp_path))
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"petsage-grpc: error: cannot write the address file {tmp_path}: it is a directory"
    ]


def test_a_file_that_cannot_be_published_stops_the_ports_already_serving(tmp_path, monkeypatch):
    def fail(self: AddressFile, listeners: object) -> None:
        raise AddressFileError("cannot write the address file: No space left on device")

    monkeypatch.setattr(AddressFile, "publish", fail)
    server = ThreadedServer(make_config(address_file=str(tmp_path / "addresses.json")))
    try:
        with pytest.raises(AddressFileError, match="No space left"):
            server.__enter__()
        assert server.server.port is not None
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", server.server.port), timeout=WAIT).close()
    finally:
        server.loop.call_soon_threadsafe(server.loop.stop)


def test_variable_and_config_file_set_the_address_file(tmp_path):
    config = tmp_path / "petsage.toml"
    config.write_text('address_file = "/run/from-file.json"\n')
    assert Config.load({"config": str(config)}, {}).address_file == "/run/from-file.json"
    environ = {"PETSAGE_ADDRESS_FILE": "/run/from-env.json"}
    assert Config.load({"config": str(config)}, environ).address_file == "/run/from-env.json"


def test_probe_checks_the_health_only_port_when_there_is_one(tmp_path):
    path = tmp_path / "addresses.json"
    with ThreadedServer(make_config(health_port=0, address_file=str(path))) as server:
        code, lines = probe("-addr-file", str(path), "-v")
    assert code == 0
    assert f"> addr=127.0.0.1:{server.server.health_port} conn_timeout=1s rpc_timeout=1s" in lines
    assert lines[-1] == "status: SERVING"


def test_smoke_takes_the_main_port_even_beside_a_health_only_port(tmp_path):
    path = tmp_path / "addresses.json"
    with ThreadedServer(make_config(health_port=0, address_file=str(path))):
        result = run_cli("smoke", "-addr-file", str(path), "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["status"] == "SMOKE_STATUS_OK"


def test_probe_with_tls_takes_the_tls_main_port(tmp_path, certs):
    path = tmp_path / "addresses.json"
    settings = {"tls_cert": str(certs.server.cert), "tls_key": str(certs.server.key)}
    with ThreadedServer(make_config(health_port=0, address_file=str(path), **settings)):
        tls = ("-tls", "-tls-ca-cert", str(certs.ca), "-tls-server-name", SERVER_NAME)
        assert probe("-addr-file", str(path), *tls) == (0, ["status: SERVING"])
        assert probe("-addr-file", str(path)) == (0, ["status: SERVING"])  # the health port


def test_probe_without_tls_of_a_tls_only_server_is_told_to_add_it(tmp_path, certs):
    path = tmp_path / "addresses.json"
    settings = {"tls_cert": str(certs.server.cert), "tls_key": str(certs.server.key)}
    with ThreadedServer(make_config(address_file=str(path), **settings)):
        assert probe("-addr-file", str(path)) == (
            1,
            [f"error: {path}: the server's main port speaks TLS: add -tls"],
        )


def test_probe_with_tls_of_a_plaintext_server_is_told_to_leave_it_out(tmp_path):
    path = tmp_path / "addresses.json"
    with ThreadedServer(make_config(address_file=str(path))):
        code, lines = probe("-addr-file", str(path), "-tls")
    assert (code, lines) == (
        1,
        [f"error: {path}: the server's main port speaks plaintext: leave out -tls"],
    )


def test_probe_of_a_missing_file_is_a_connection_failure(tmp_path):
    path = tmp_path / "addresses.json"
    assert probe("-addr-file", str(path)) == (
        2,
        [f"error: cannot read the address file {path}: No such file or directory"],
    )


def test_probe_of_a_file_that_is_not_an_address_file_is_a_connection_failure(tmp_path):
    path = tmp_path / "addresses.json"
    path.write_text('{"listeners": {}}')
    assert probe("-addr-file", str(path)) == (
        2,
        [f"error: {path} is not an address file (no main listener)"],
    )


def test_probe_takes_addr_or_addr_file_not_both(tmp_path):
    code, lines = probe("-addr", "127.0.0.1:1", "-addr-file", str(tmp_path / "a.json"))
    assert (code, lines) == (1, ["error: specify -addr or -addr-file, not both"])


@pytest.mark.parametrize(
    ("host", "address"),
    [("0.0.0.0", "127.0.0.1:5"), ("::", "[::1]:5"), ("::1", "[::1]:5"), ("db.local", "db.local:5")],
)
def test_a_wildcard_host_is_reached_on_loopback(host, address):
    assert connect_address(Listener(host, 5, "plaintext")) == address


def test_file_is_json_with_the_pid_and_each_listener(tmp_path):
    path = tmp_path / "addresses.json"
    AddressFile(str(path)).publish({"main": Listener("::", 50051, "mTLS")})
    document = json.loads(Path(path).read_text())
    assert document["listeners"] == {"main": {"host": "::", "port": 50051, "security": "mTLS"}}
    assert isinstance(document["pid"], int)
