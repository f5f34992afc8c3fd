"""Certificates made at test time: a CA, a server certificate and a client certificate.

They live long enough (a year, 90 days) that a server serving them is far from the expiry warning
(SmokeTest DEGRADED within a week of it); a test that wants another validity says so."""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

SERVER_NAME = "server.petsage.test"
CA_LIFE = datetime.timedelta(days=365)
LIFE = datetime.timedelta(days=90)


@dataclass(frozen=True)
class Pair:
    cert: Path
    key: Path

    def read(self) -> tuple[bytes, bytes]:
        """(key, certificate chain) as grpc wants them."""
        return self.key.read_bytes(), self.cert.read_bytes()


@dataclass(frozen=True)
class Certs:
    ca: Path
    server: Pair
    client: Pair
    authority: Authority


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> Path:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return path


class Authority:
    """A test CA that issues certificates into a directory."""

    def __init__(self, directory: Path, life: datetime.timedelta = CA_LIFE) -> None:
        self.directory = directory
        self.now = datetime.datetime.now(datetime.UTC)
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(_name("PetSage test CA"))
            .issuer_name(_name("PetSage test CA"))
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(self.now - datetime.timedelta(hours=1))
            .not_valid_after(self.now + life)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self.key, hashes.SHA256())
        )
        self.path = directory / "ca.pem"
        self.path.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))

    def issue(
        self,
        name: str,
        usage: x509.ObjectIdentifier,
        stem: str,
        *,
        start: datetime.timedelta = datetime.timedelta(hours=-1),
        end: datetime.timedelta = LIFE,
    ) -> Pair:
        """A certificate valid from now + `start` to now + `end`, and its key."""
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(name))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(self.now + start)
            .not_valid_after(self.now + end)
            .add_extension(
                x509.SubjectAlternativeName(
                    [x509.DNSName(name), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
                ),
                critical=False,
            )
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .sign(self.key, hashes.SHA256())
        )
        cert_path = self.directory / f"{stem}.pem"
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return Pair(cert_path, _write_key(key, self.directory / f"{stem}.key"))

    def server(
        self,
        stem: str = "server",
        *,
        start: datetime.timedelta = datetime.timedelta(hours=-1),
        end: datetime.timedelta = LIFE,
    ) -> Pair:
        """A server certificate for SERVER_NAME and 127.0.0.1, valid from now + `start` to
        now + `end`."""
        return self.issue(SERVER_NAME, ExtendedKeyUsageOID.SERVER_AUTH, stem, start=start, end=end)


def make_certs(directory: Path) -> Certs:
    """A CA, a server certificate for SERVER_NAME and 127.0.0.1, and a client certificate."""
    authority = Authority(directory)
    return Certs(
        ca=authority.path,
        server=authority.server(),
        client=authority.issue("client.petsage.test", ExtendedKeyUsageOID.CLIENT_AUTH, "client"),
        authority=authority,
    )
