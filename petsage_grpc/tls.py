"""ServerTLS: the server's certificate, key and client CAs, read from files and served through
grpc's dynamic server credentials, so that files that change on disk (cert-manager renewing a
certificate, a Kubernetes secret volume swapping its files) are served without a restart.

The files are read and checked in the background every `interval`, never during a handshake:
grpc asks `_fetch()` at each new handshake, and gets a new configuration only once one has been
read and checked. A half-written or mismatched pair is not served; the previous one stays; nor is
a certificate chain that is expired or not yet valid.

The validity is read from the certificates' DER with the few lines below, not with a library: the
standard library decodes only CA certificates and peers' (`SSLContext.get_ca_certs()` skips a
server's own certificate), and `cryptography` would make a TLS server import about 16 MB of
package in 35-60 ms for two dates.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import datetime
import logging
import re
import ssl
import threading
import time
from dataclasses import dataclass

import grpc

log = logging.getLogger(__name__)

EXPIRY_WARNING = 7 * 24 * 3600.0
"""Seconds before the served certificate expires from which SmokeTest says DEGRADED."""


class TLSError(RuntimeError):
    """The TLS files cannot be used; the message names the file and the problem."""


@dataclass(frozen=True)
class _Files:
    cert: bytes
    key: bytes
    client_ca: bytes | None
    not_after: float = 0.0  # when the chain expires: its soonest notAfter (Unix time)


class ServerTLS:
    """Serves the TLS files' current contents; `watch()` keeps them current.

    `expiry_warning`: seconds before the served certificate expires from which
    `expiry_problem()` says so."""

    def __init__(
        self, cert: str, key: str, client_ca: str = "", *, expiry_warning: float = EXPIRY_WARNING
    ) -> None:
        self.cert_path, self.key_path, self.client_ca_path = cert, key, client_ca
        self._expiry_warning = expiry_warning
        self._served = self._read()  # raises TLSError: a bad start-up is one clear line
        self._pending: grpc.ServerCertificateConfiguration | None = None
        self._lock = threading.Lock()  # _fetch runs on grpc's threads

    @property
    def mutual(self) -> bool:
        """Whether clients must present a certificate signed by the client CAs."""
        return bool(self.client_ca_path)

    @property
    def not_after(self) -> float:
        """When the served certificate chain expires (the soonest of its certificates), in
        seconds since the Unix epoch."""
        return self._served.not_after

    def expiry_problem(self, now: float | None = None) -> str:
        """Why the served certificate is a problem, as shown to callers (no file names): it
        expires within `expiry_warning`, or has expired; "" when it is not."""
        left = self.not_after - (time.time() if now is None else now)
        if left > self._expiry_warning:
            return ""
        when = _format_time(self.not_after)
        if left <= 0:
            return f"the TLS certificate expired on {when}"
        days = left / 86400
        return f"the TLS certificate expires on {when}, in " + (
            f"{days:.1f} days" if days >= 1 else f"{left / 3600:.1f} hours"
        )

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
            files = self._read(self._served)
        except Exception as exc:  # whatever is wrong with the files, keep serving the last good
            log.warning(
                "TLS files not reloaded, the previous ones are still served: %s",
                exc,
                extra={"event": "tls_reload_failed", "error": str(exc)},
            )
            return False
        if files is self._served:
            return False
        self._served = files
        with self._lock:
            self._pending = _configuration(files)
        log.info(
            "TLS files changed: new connections get the new certificate (valid until %s)",
            _format_time(files.not_after),
            extra={"event": "tls_reloaded", "not_after": files.not_after},
        )
        return True

    def _fetch(self) -> grpc.ServerCertificateConfiguration | None:
        # Called by grpc at each handshake, on one of its threads: no I/O here.
        with self._lock:
            pending, self._pending = self._pending, None
        return pending

    def _read(self, served: _Files | None = None) -> _Files:
        """The files, checked; `served` itself if they are what it holds (an expired served
        certificate is not refused again: its expiry is for the metrics and SmokeTest to say)."""
        cert = _read(self.cert_path, "--tls-cert")
        key = _read(self.key_path, "--tls-key")
        client_ca = _read(self.client_ca_path, "--tls-client-ca") if self.client_ca_path else None
        if served is not None and (served.cert, served.key, served.client_ca) == (
            cert,
            key,
            client_ca,
        ):
            return served
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
        not_after = _check_validity(cert, self.cert_path, time.time())
        # Reread: a file replaced between the first read and the check must not mix in.
        if (cert, key) != (_read(self.cert_path, "--tls-cert"), _read(self.key_path, "--tls-key")):
            raise TLSError("the TLS files changed while being read")
        return _Files(cert, key, client_ca, not_after)


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


_PEM_CERTIFICATE = re.compile(
    rb"-----BEGIN (?:TRUSTED |X509 )?CERTIFICATE-----([A-Za-z0-9+/=\s]*)-----END", re.ASCII
)


def _check_validity(chain: bytes, path: str, now: float) -> float:
    """When the chain (PEM, as load_cert_chain took it) expires: the soonest notAfter of its
    certificates. Raises TLSError if one of them is expired or not yet valid at `now`."""
    soonest = None
    for number, block in enumerate(_PEM_CERTIFICATE.findall(chain), start=1):
        which = "the certificate" if number == 1 else f"certificate {number} of the chain"
        try:
            not_before, not_after = _validity(base64.b64decode(block))
        except (ValueError, IndexError, binascii.Error):
            raise TLSError(f"--tls-cert {path}: {which}: cannot read its validity") from None
        if now < not_before:
            raise TLSError(
                f"--tls-cert {path}: {which} is not valid before {_format_time(not_before)}"
            )
        if now >= not_after:
            raise TLSError(f"--tls-cert {path}: {which} expired on {_format_time(not_after)}")
        soonest = not_after if soonest is None else min(soonest, not_after)
    if soonest is None:
        raise TLSError(f"--tls-cert {path}: no PEM certificate found")
    return soonest


def _validity(der: bytes) -> tuple[float, float]:
    """(notBefore, notAfter) of a DER certificate, as Unix times (RFC 5280 section 4.1:
    Certificate = SEQUENCE { tbsCertificate = SEQUENCE { [0] version OPTIONAL, serialNumber,
    signature, issuer, validity = SEQUENCE { notBefore, notAfter }, ... }, ... })."""
    _, at, _ = _der(der, 0, 0x30)  # Certificate
    _, at, _ = _der(der, at, 0x30)  # tbsCertificate
    tag, _, end = _der(der, at)
    if tag == 0xA0:  # version
        at = end
    for tag in (0x02, 0x30, 0x30):  # serialNumber, signature, issuer: skipped
        _, _, at = _der(der, at, tag)
    _, at, _ = _der(der, at, 0x30)  # validity
    times = []
    for _ in range(2):
        tag, start, at = _der(der, at)
        times.append(_der_time(tag, der[start:at].decode("ascii")))
    return times[0], times[1]


def _der(der: bytes, at: int, expect: int | None = None) -> tuple[int, int, int]:
    """(tag, start, end) of the contents of the DER element at `at`."""
    tag, length = der[at], der[at + 1]
    at += 2
    if length & 0x80:  # long form: the next (length & 0x7F) bytes are the length
        size = length & 0x7F
        if not 1 <= size <= 4:
            raise ValueError("bad DER length")
        length, at = int.from_bytes(der[at : at + size], "big"), at + size
    if (expect is not None and tag != expect) or at + length > len(der):
        raise ValueError("not a DER certificate")
    return tag, at, at + length


_UTC_TIME = re.compile(r"(\d\d)(\d\d)(\d\d)(\d\d)(\d\d)(\d\d)Z", re.ASCII)
_GENERALIZED_TIME = re.compile(r"(\d{4})(\d\d)(\d\d)(\d\d)(\d\d)(\d\d)Z", re.ASCII)


def _der_time(tag: int, text: str) -> float:
    """A UTCTime (0x17, YYMMDDHHMMSSZ; 50-99 are 19xx) or GeneralizedTime (0x18,
    YYYYMMDDHHMMSSZ) as RFC 5280 section 4.1.2.5 writes them, as a Unix time."""
    pattern = {0x17: _UTC_TIME, 0x18: _GENERALIZED_TIME}.get(tag)
    found = pattern.fullmatch(text) if pattern is not None else None
    if found is None:
        raise ValueError(f"not an RFC 5280 time: {text!r}")
    year, month, day, hour, minute, second = (int(part) for part in found.groups())
    if tag == 0x17:
        year += 1900 if year >= 50 else 2000
    moment = datetime.datetime(year, month, day, hour, minute, second, tzinfo=datetime.UTC)
    return moment.timestamp()


def _format_time(seconds: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(seconds))
