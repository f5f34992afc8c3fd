"""ServerTLS: the server's certificate, key and client CAs, read from files and served through
grpc's dynamic server credentials, so that files that change on disk (cert-manager renewing a
certificate, a Kubernetes secret volume swapping its files) are served without a restart.

The files are read and checked in the background every `interval`, never during a handshake:
grpc asks `_fetch()` at each new handshake, and gets a new configuration only once one has been
read and checked. A half-written or mismatched pair is not served; the previous one stays.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import threading
from dataclasses import dataclass

import grpc

log = logging.getLogger(__name__)


class TLSError(RuntimeError):
    """The TLS files cannot be used; the message names the file and the problem."""


@dataclass(frozen=True)
class _Files:
    cert: bytes
    key: bytes
    client_ca: bytes | None


class ServerTLS:
    """Serves the TLS files' current contents; `watch()` keeps them current."""

    def __init__(self, cert: str, key: str, client_ca: str = "") -> None:
        self.cert_path, self.key_path, self.client_ca_path = cert, key, client_ca
        self._served = self._read()  # raises TLSError: a bad start-up is one clear line
        self._pending: grpc.ServerCertificateConfiguration | None = None
        self._lock = threading.Lock()  # _fetch runs on grpc's threads

    @property
    def mutual(self) -> bool:
        """Whether clients must present a certificate signed by the client CAs."""
        return bool(self.client_ca_path)

    def credentials(self) -> grpc.ServerCredentials:
        return grpc.dynamic_ssl_server_credentials(
            _configuration(self._served),
            self._fetch,
            require_client_authentication=self.mutual,
        )

    async def watch(self, interval: float) -> None:
        """Every `interval` seconds, read the files; serve them from the next handshake on when
        they changed and are good. Runs until cancelled; no bad file ends it."""
        while True:
            await asyncio.sleep(interval)
            self.reload()

    def reload(self) -> bool:
        """Read the files now; True if they changed and will be served from the next handshake."""
        try:
            files = self._read()
        except Exception as exc:  # whatever is wrong with the files, keep serving the last good
            log.warning(
                "TLS files not reloaded, the previous ones are still served: %s",
                exc,
                extra={"event": "tls_reload_failed", "error": str(exc)},
            )
            return False
        if files == self._served:
            return False
        self._served = files
        with self._lock:
            self._pending = _configuration(files)
        log.info(
            "TLS files changed: new connections get the new certificate",
            extra={"event": "tls_reloaded"},
        )
        return True

    def _fetch(self) -> grpc.ServerCertificateConfiguration | None:
        # Called by grpc at each handshake, on one of its threads: no I/O here.
        with self._lock:
            pending, self._pending = self._pending, None
        return pending

    def _read(self) -> _Files:
        cert = _read(self.cert_path, "--tls-cert")
        key = _read(self.key_path, "--tls-key")
        client_ca = _read(self.client_ca_path, "--tls-client-ca") if self.client_ca_path else None
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        try:
            context.load_cert_chain(self.cert_path, self.key_path, password=_no_passphrase)
        except _EncryptedKey:
            raise TLSError(
                f"--tls-key {self.key_path} is encrypted: give the key without a passphrase"
            ) from None
        except ssl.SSLError as exc:
            raise TLSError(
                f"--tls-cert {self.cert_path} and --tls-key {self.key_path} are not a "
                f"certificate and its key: {exc.reason or exc}"
            ) from None
        if client_ca is not None:
            try:
                context.load_verify_locations(cadata=client_ca.decode("ascii", "replace"))
            except (ssl.SSLError, ValueError) as exc:
                raise TLSError(
                    f"--tls-client-ca {self.client_ca_path} holds no usable CA certificate: {exc}"
                ) from None
        # Reread: a file replaced between the first read and the check must not mix in.
        if (cert, key) != (_read(self.cert_path, "--tls-cert"), _read(self.key_path, "--tls-key")):
            raise TLSError("the TLS files changed while being read")
        return _Files(cert, key, client_ca)


class _EncryptedKey(Exception):
    pass


def _no_passphrase() -> bytes:
    # Without this, ssl would ask for a passphrase on the terminal.
    raise _EncryptedKey


def _read(path: str, flag: str) -> bytes:
    try:
        with open(path, "rb") as file:
            return file.read()
    except OSError as exc:
        raise TLSError(f"{flag} {path}: cannot read: {exc.strerror}") from None


def _configuration(files: _Files) -> grpc.ServerCertificateConfiguration:
    return grpc.ssl_server_certificate_configuration(
        [(files.key, files.cert)], root_certificates=files.client_ca
    )
