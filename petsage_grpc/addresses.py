"""The address file: where a running server really listens, for a probe that cannot be told.

`serve --address-file FILE` writes it once every port serves, and removes it once they are
closed; `probe -addr-file FILE` reads it. A container's HEALTHCHECK so probes the port the server
bound, however it was chosen (flag, `PETSAGE_*` variable, config file, or 0 for a free one).

The file is JSON, written whole or not at all (a temporary file in the same directory, renamed
over it):

    {"pid": 1, "listeners": {
        "main": {"host": "0.0.0.0", "port": 50051, "security": "plaintext"},
        "health": {"host": "0.0.0.0", "port": 8081, "security": "plaintext"},
        "admin": {"host": "127.0.0.1", "port": 9090, "security": "http"}}}

`main` is always there; `security` is `plaintext`, `TLS` or `mTLS` for gRPC ports. This module
imports nothing but the standard library and `values`: the probe reads it.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

from petsage_grpc.values import format_address

PLAINTEXT = "plaintext"
_WILDCARDS = {"0.0.0.0": "127.0.0.1", "::": "::1"}
"""A server listening on every address is probed on the loopback address of that family."""


class AddressFileError(RuntimeError):
    """The address file cannot be written or read; the message says which file and why."""


@dataclass(frozen=True)
class Listener:
    """One port the server listens on."""

    host: str
    port: int
    security: str


class AddressFile:
    """The address file of one server: checked before the ports are bound, published once they
    serve, removed once they are closed (if it still holds what this server wrote)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._written: bytes | None = None

    def check(self) -> None:
        """Fail now if the file's directory cannot take it. Raises AddressFileError."""
        if os.path.isdir(self.path):
            raise AddressFileError(f"cannot write the address file {self.path}: it is a directory")
        import tempfile  # here: only a server given --address-file pays for it (shutil, bz2, lzma)

        try:
            descriptor, name = tempfile.mkstemp(dir=self._directory, prefix=".petsage-")
        except OSError as exc:
            raise self._error(exc) from None
        os.close(descriptor)
        os.unlink(name)

    def publish(self, listeners: dict[str, Listener]) -> None:
        """Write the listeners, replacing the file whole. Raises AddressFileError."""
        import json  # with tempfile, only for a server given --address-file (and the probe)
        import tempfile

        document = {"pid": os.getpid(), "listeners": {k: vars(v) for k, v in listeners.items()}}
        data = (json.dumps(document) + "\n").encode()

        try:
            descriptor, name = tempfile.mkstemp(dir=self._directory, prefix=".petsage-")
            try:
                with os.fdopen(descriptor, "wb") as file:
                    file.write(data)
                os.chmod(name, 0o644)  # the probe may run as another user
                os.replace(name, self.path)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(name)
                raise
        except OSError as exc:
            raise self._error(exc) from None
        self._written = data

    def remove(self) -> None:
        """Remove the file if it still holds what `publish` wrote; never raises."""
        if self._written is None:
            return
        with contextlib.suppress(OSError):
            with open(self.path, "rb") as file:
                ours = file.read() == self._written
            if ours:
                os.unlink(self.path)
        self._written = None

    @property
    def _directory(self) -> str:
        return os.path.dirname(os.path.abspath(self.path))

    def _error(self, exc: OSError) -> AddressFileError:
        return AddressFileError(f"cannot write the address file {self.path}: {exc.strerror}")


def read(path: str) -> dict[str, Listener]:
    """The listeners of the server that wrote `path`, by name. Raises AddressFileError."""
    import json

    try:
        with open(path, "rb") as file:
            document = json.loads(file.read())
    except OSError as exc:
        raise AddressFileError(f"cannot read the address file {path}: {exc.strerror}") from None
    except ValueError:
        raise AddressFileError(f"{path} is not an address file (not JSON)") from None
    try:
        listeners = {
            name: Listener(str(each["host"]), int(each["port"]), str(each["security"]))
            for name, each in document["listeners"].items()
        }
    except (KeyError, TypeError, ValueError, AttributeError):
        raise AddressFileError(f"{path} is not an address file (no listeners)") from None
    if "main" not in listeners:
        raise AddressFileError(f"{path} is not an address file (no main listener)")
    return listeners


def connect_address(listener: Listener) -> str:
    """Where a client on this machine reaches `listener`: its own host, or loopback for a
    wildcard."""
    host = _WILDCARDS.get(listener.host, listener.host)
    return format_address(host, listener.port)
