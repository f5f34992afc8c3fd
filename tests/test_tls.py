"""TLS and mTLS on the main port, certificate rotation without a restart, the health-only port,
the certificate's validity (refused outside it, a gauge of its expiry, DEGRADED before it)."""

from __future__ import annotations

import datetime
import json
import re
import shutil
import socket
import ssl
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)
from prometheus_client.parser import text_string_to_metric_families

from petsage_grpc._gen.petsage.v1 import smoke_pb2, smoke_pb2_grpc
from petsage_grpc.config import Config
from petsage_grpc.health import SERVING
from petsage_grpc.smoke import OK_MESSAGE
from petsage_grpc.tls import ServerTLS, TLSError
from tests.certs import SERVER_NAME, Authority, Certs, Pair, make_certs
from tests.helpers import (
    WAIT,
    ThreadedServer,
    check,
    make_config,
    run_cli,
    start_server,
    wait_until,
)


@pytest.fixture
def certs(tmp_path: Path) -> Certs:
    return make_certs(tmp_path)


def tls_server(certs: Certs, mutual: bool = False, **settings) -> ThreadedServer:
    return ThreadedServer(
        make_config(
            tls_cert=str(certs.server.cert),
            tls_key=str(certs.server.key),
            tls_client_ca=str(certs.ca) if mutual else "",
            **settings,
        )
    )


def secure_channel(address: str, certs: Certs, client: bool = False, **options) -> grpc.Channel:
    credentials = grpc.ssl_channel_credentials(
        certs.ca.read_bytes(), *(certs.client.read() if client else (None, None))
    )
    return grpc.secure_channel(
        address,
        credentials,
        options=[("grpc.ssl_target_name_override", SERVER_NAME), *options.items()],
    )


def fails_to_connect(channel: grpc.Channel) -> bool:
    try:
        grpc.channel_ready_future(channel).result(timeout=1)
    except grpc.FutureTimeoutError:
        return True
    return False


def served_certificate(port: int) -> bytes:
    """The certificate the server presents to a new connection now (DER)."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols(["h2"])
    with (
        socket.create_connection(("127.0.0.1", port), timeout=WAIT) as sock,
        context.wrap_socket(sock) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return der


def test_tls_serves_a_client_that_trusts_the_ca(certs):
    with tls_server(certs) as server, secure_channel(server.address, certs) as channel:
        assert check(channel, "") == SERVING


def test_tls_port_refuses_plaintext(certs):
    with tls_server(certs) as server, grpc.insecure_channel(server.address) as channel:
        assert fails_to_connect(channel)


def test_mtls_accepts_a_client_certificate_signed_by_the_client_ca(certs):
    with (
        tls_server(certs, mutual=True) as server,
        secure_channel(server.address, certs, client=True) as channel,
    ):
        assert check(channel, "") == SERVING


def test_mtls_rejects_a_client_without_a_certificate(certs):
    with tls_server(certs, mutual=True) as server, secure_channel(server.address, certs) as channel:
        assert fails_to_connect(channel)


def test_mtls_rejects_a_client_certificate_from_another_ca(certs, tmp_path_factory):
    stranger = make_certs(tmp_path_factory.mktemp("stranger"))
    with tls_server(certs, mutual=True) as server:
        credentials = grpc.ssl_channel_credentials(certs.ca.read_bytes(), *stranger.client.read())
        options = [("grpc.ssl_target_name_override", SERVER_NAME)]
        with grpc.secure_channel(server.address, credentials, options=options) as channel:
            assert fails_to_connect(channel)


def test_rotated_certificate_is_served_without_a_failed_call(certs):
    renewed = certs.authority.server("renewed")
    failures: list[BaseException] = []
    calls = 0
    stop = threading.Event()
    with tls_server(certs, tls_reload_interval=0.05) as server:
        port = server.server.port
        assert port is not None
        before = served_certificate(port)

        def call_in_a_loop() -> None:
            nonlocal calls
            long_lived = secure_channel(server.address, certs)
            while not stop.is_set():
                fresh = secure_channel(server.address, certs)  # a new handshake each time
                try:
                    for channel in (long_lived, fresh):
                        check(channel, "")
                        calls += 1
                except grpc.RpcError as error:
                    failures.append(error)
                finally:
                    fresh.close()
            long_lived.close()

        caller = threading.Thread(target=call_in_a_loop)
        caller.start()
        try:
            wait_until(lambda: calls > 10, what="calls before the rotation")
            # One file after the other, as a careless deploy writes them: the mismatched pair
            # in between must not be served.
            shutil.copyfile(renewed.cert, certs.server.cert)
            shutil.copyfile(renewed.key, certs.server.key)
            wait_until(lambda: served_certificate(port) != before, what="the new certificate")
            assert served_certificate(port) == ssl.PEM_cert_to_DER_cert(renewed.cert.read_text())
            seen = calls
            wait_until(lambda: calls > seen + 10, what="calls after the rotation")
        finally:
            stop.set()
            caller.join(WAIT)
    assert failures == []


def missing_cert(certs: Certs, tmp_path: Path) -> list[str]:
    return ["--tls-cert", str(tmp_path / "missing.pem"), "--tls-key", str(certs.server.key)]


def key_of_another_pair(certs: Certs, tmp_path: Path) -> list[str]:
    (tmp_path / "other").mkdir()
    other = make_certs(tmp_path / "other")
    return ["--tls-cert", str(certs.server.cert), "--tls-key", str(other.server.key)]


def key_as_client_ca(certs: Certs, tmp_path: Path) -> list[str]:
    pair = ["--tls-cert", str(certs.server.cert), "--tls-key", str(certs.server.key)]
    return [*pair, "--tls-client-ca", str(certs.server.key)]


@pytest.mark.parametrize(
    ("bad_files", "message"),
    [
        (missing_cert, "cannot read"),
        (key_of_another_pair, "are not a certificate and its key"),
        (key_as_client_ca, "--tls-client-ca"),
    ],
    ids=["missing-cert", "key-of-another-pair", "key-as-client-ca"],
)
def test_bad_tls_files_at_start_up_are_a_one_line_error(certs, tmp_path, bad_files, message):
    result = run_cli("serve", "--host", "127.0.0.1", "--port", "0", *bad_files(certs, tmp_path))
    assert result.returncode == 1, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, lines
    assert message in lines[0]


def test_tls_cert_without_key_is_a_usage_error(certs):
    result = run_cli("serve", "--tls-cert", str(certs.server.cert))
    assert result.returncode == 2
    assert "--tls-cert and --tls-key go together" in result.stderr


# --- the health-only port ------------------------------------------------------------------


@pytest.fixture
def mtls_with_health_port(certs) -> Iterator[ThreadedServer]:
    with tls_server(certs, mutual=True, health_port=0) as server:
        yield server


def health_only(server: ThreadedServer) -> grpc.Channel:
    return grpc.insecure_channel(f"127.0.0.1:{server.server.health_port}")


def test_health_port_answers_plaintext_check_while_main_port_wants_mtls(mtls_with_health_port):
    with health_only(mtls_with_health_port) as channel:
        assert check(channel, "readiness") == SERVING
        assert check(channel, "liveness") == SERVING


def test_health_port_serves_nothing_but_health(certs):
    with (
        tls_server(certs, health_port=0) as server,
        secure_channel(server.address, certs) as main,
        health_only(server) as channel,
    ):
        # The main port serves SmokeTest and reflection first: that must change nothing here.
        smoke_pb2_grpc.SmokeServiceStub(main).SmokeTest(smoke_pb2.SmokeTestRequest(), timeout=WAIT)
        assert ProtoReflectionDescriptorDatabase(main).get_services()
        with pytest.raises(grpc.RpcError) as smoke:
            smoke_pb2_grpc.SmokeServiceStub(channel).SmokeTest(
                smoke_pb2.SmokeTestRequest(), timeout=WAIT
            )
        assert smoke.value.code() == grpc.StatusCode.UNIMPLEMENTED
        with pytest.raises(grpc.RpcError) as reflection:
            ProtoReflectionDescriptorDatabase(channel).get_services()
        assert reflection.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_health_port_follows_the_same_state(mtls_with_health_port):
    mtls_with_health_port.server.monitor.enter_maintenance()
    with health_only(mtls_with_health_port) as channel:
        assert check(channel, "readiness") != SERVING


def test_health_port_from_the_cli_on_its_own_host(processes):
    process = start_server("--health-port", "0", "--health-host", "::1")
    processes.append(process)
    process.wait_for_port()
    port = int(process.wait_for_line(r"health-only plaintext port on \[::1\]:(\d+)").group(1))
    with grpc.insecure_channel(f"[::1]:{port}") as channel:
        assert check(channel, "") == SERVING


# --- reloading, file by file ---------------------------------------------------------------


def encrypted_copy(key: Path, to: Path) -> Path:
    from cryptography.hazmat.primitives import serialization

    private = serialization.load_pem_private_key(key.read_bytes(), password=None)
    to.write_bytes(
        private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        )
    )
    return to


@pytest.fixture
def server_tls(certs, caplog) -> ServerTLS:
    """The server's TLS files as loaded at start-up, its log captured."""
    caplog.set_level("INFO", logger="petsage_grpc.tls")
    return ServerTLS(str(certs.server.cert), str(certs.server.key))


def events(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [getattr(record, "event", "") for record in caplog.records]


def test_reload_of_unchanged_files_changes_nothing(server_tls, caplog):
    assert server_tls.reload() is False
    assert "tls_reload_failed" not in events(caplog)


def test_reload_serves_a_new_pair_once_both_files_are_written(server_tls, certs, caplog):
    renewed = certs.authority.server("renewed")
    shutil.copyfile(renewed.cert, certs.server.cert)  # the key is not there yet
    assert server_tls.reload() is False
    assert "not a certificate and its key" in caplog.text
    shutil.copyfile(renewed.key, certs.server.key)
    assert server_tls.reload() is True
    assert server_tls._fetch() is not None  # the next handshake gets it, once
    assert server_tls._fetch() is None
    assert events(caplog).count("tls_reload_failed") == 1 and events(caplog)[-1] == "tls_reloaded"


def test_reload_keeps_the_last_good_pair_when_the_new_key_is_encrypted(
    server_tls, certs, tmp_path, caplog
):
    renewed = certs.authority.server("renewed")
    shutil.copyfile(renewed.cert, certs.server.cert)
    shutil.copyfile(encrypted_copy(renewed.key, tmp_path / "locked.key"), certs.server.key)
    assert server_tls.reload() is False
    assert "is encrypted" in caplog.text
    assert server_tls._fetch() is None
    assert events(caplog) == ["tls_reload_failed"]


def test_encrypted_key_at_start_up_is_a_one_line_error(certs, tmp_path):
    locked = encrypted_copy(certs.server.key, tmp_path / "locked.key")
    result = run_cli("serve", "--tls-cert", str(certs.server.cert), "--tls-key", str(locked))
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"petsage-grpc: error: --tls-key {locked} is encrypted: give the key without a passphrase"
    ]


# --- the certificate's validity ------------------------------------------------------------

DAY = datetime.timedelta(days=1)


def not_after(pair: Pair) -> float:
    cert = x509.load_pem_x509_certificate(pair.cert.read_bytes())
    return cert.not_valid_after_utc.timestamp()


def expired(certs: Certs) -> Pair:
    return certs.authority.server("expired", start=-10 * DAY, end=-DAY)


def not_yet_valid(certs: Certs) -> Pair:
    return certs.authority.server("future", start=DAY, end=90 * DAY)


@pytest.mark.parametrize(
    ("pair", "message"),
    [(expired, "the certificate expired on 20"), (not_yet_valid, "the certificate is not valid")],
    ids=["expired", "not-yet-valid"],
)
def test_certificate_out_of_its_validity_at_start_up_is_a_one_line_error(certs, pair, message):
    bad = pair(certs)
    tls = ["--tls-cert", str(bad.cert), "--tls-key", str(bad.key)]
    result = run_cli("serve", "--host", "127.0.0.1", "--port", "0", *tls)
    assert result.returncode == 1, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"petsage-grpc: error: --tls-cert {bad.cert}: {message}")


def test_reload_refuses_an_expired_certificate_and_keeps_the_last_good_pair(
    server_tls, certs, caplog
):
    served = server_tls.not_after
    old = expired(certs)
    shutil.copyfile(old.cert, certs.server.cert)
    shutil.copyfile(old.key, certs.server.key)
    assert server_tls.reload() is False
    assert "the certificate expired on" in caplog.text
    assert events(caplog) == ["tls_reload_failed"]
    assert server_tls._fetch() is None
    assert server_tls.not_after == served


def test_expired_certificate_swapped_in_is_not_served(certs, caplog):
    caplog.set_level("INFO", logger="petsage_grpc.tls")
    old = expired(certs)
    with tls_server(certs, tls_reload_interval=0.05) as server:
        port = server.server.port
        assert port is not None
        before = served_certificate(port)
        shutil.copyfile(old.cert, certs.server.cert)
        shutil.copyfile(old.key, certs.server.key)
        wait_until(lambda: "tls_reload_failed" in events(caplog), what="the refusal")
        assert served_certificate(port) == before
        with secure_channel(server.address, certs) as channel:
            assert check(channel, "") == SERVING


def test_expiry_is_read_from_utc_time_and_generalized_time(certs):
    # Certificates say years before 2050 in UTCTime, later ones in GeneralizedTime (RFC 5280).
    for stem, years in (("utc-time", 20), ("generalized-time", 40)):
        pair = certs.authority.server(stem, end=years * 365 * DAY)
        assert ServerTLS(str(pair.cert), str(pair.key)).not_after == not_after(pair)


def test_expiry_is_the_soonest_of_the_chain(tmp_path):
    authority = Authority(tmp_path, life=30 * DAY)
    pair = authority.server(end=60 * DAY)  # outlives the CA that signed it
    chain = tmp_path / "chain.pem"
    chain.write_bytes(pair.cert.read_bytes() + authority.path.read_bytes())
    tls = ServerTLS(str(chain), str(pair.key))
    assert tls.not_after == authority.cert.not_valid_after_utc.timestamp()


def test_an_expired_certificate_in_the_chain_is_refused(certs, tmp_path):
    stale = certs.authority.issue(
        "stale", ExtendedKeyUsageOID.SERVER_AUTH, "stale", start=-9 * DAY, end=-DAY
    )
    chain = tmp_path / "chain.pem"
    chain.write_bytes(certs.server.cert.read_bytes() + stale.cert.read_bytes())
    with pytest.raises(TLSError, match=r"certificate 2 of the chain expired on"):
        ServerTLS(str(chain), str(certs.server.key))


def scrape_expiry(server: ThreadedServer) -> float:
    url = f"http://127.0.0.1:{server.server.admin_port}/metrics"
    with urllib.request.urlopen(url, timeout=WAIT) as response:
        text = response.read().decode()
    samples = {
        sample.name: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }
    return samples["petsage_tls_certificate_expiry_timestamp_seconds"]


def test_metrics_show_when_the_served_certificate_expires(certs):
    renewed = certs.authority.server("renewed", end=200 * DAY)
    with tls_server(certs, admin_port=0, tls_reload_interval=0.05) as server:
        assert scrape_expiry(server) == not_after(certs.server)
        shutil.copyfile(renewed.cert, certs.server.cert)
        shutil.copyfile(renewed.key, certs.server.key)
        wait_until(lambda: scrape_expiry(server) == not_after(renewed), what="the new expiry")


def smoke(server: ThreadedServer, certs: Certs) -> smoke_pb2.SmokeTestResponse:
    with secure_channel(server.address, certs) as channel:
        stub = smoke_pb2_grpc.SmokeServiceStub(channel)
        response: smoke_pb2.SmokeTestResponse = stub.SmokeTest(
            smoke_pb2.SmokeTestRequest(), timeout=WAIT
        )
        return response


def expiring(certs: Certs) -> Certs:
    """`certs` with a server certificate that expires in three days."""
    soon = certs.authority.server("soon", end=3 * DAY)
    shutil.copyfile(soon.cert, certs.server.cert)
    shutil.copyfile(soon.key, certs.server.key)
    return certs


def test_smoke_test_is_degraded_when_the_certificate_expires_within_a_week(certs):
    with tls_server(expiring(certs), admin_port=0) as server:
        response = smoke(server, certs)
        assert response.status == smoke_pb2.SMOKE_STATUS_DEGRADED
        assert re.fullmatch(
            r"PetSage is degraded: the TLS certificate expires on"
            r" \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC, in (2\.\d|3\.0) days",
            response.message,
        ), response.message
        url = f"http://127.0.0.1:{server.server.admin_port}/api/v1/smoke-test"
        with urllib.request.urlopen(url, timeout=WAIT) as answer:
            assert json.loads(answer.read()) == {"status": "degraded"}


def test_smoke_test_is_ok_when_the_certificate_expires_after_the_warning_window(certs):
    with tls_server(expiring(certs), tls_expiry_warning=DAY.total_seconds()) as server:
        response = smoke(server, certs)
        assert (response.status, response.message) == (smoke_pb2.SMOKE_STATUS_OK, OK_MESSAGE)


def test_smoke_test_is_ok_with_the_test_certificates(certs):
    with tls_server(certs) as server:
        assert smoke(server, certs).status == smoke_pb2.SMOKE_STATUS_OK


def test_expiry_warning_is_a_setting(tmp_path):
    (tmp_path / "petsage.toml").write_text('tls_expiry_warning = "720h"\n')
    file = Config.load({"config": str(tmp_path / "petsage.toml")}, {})
    assert file.tls_expiry_warning == 30 * DAY.total_seconds()
    assert Config.load({}, {"PETSAGE_TLS_EXPIRY_WARNING": "24h"}).tls_expiry_warning == 86400
    assert Config().tls_expiry_warning == 7 * DAY.total_seconds()
