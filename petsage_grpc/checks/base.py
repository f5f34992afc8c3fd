"""What every kind of check shares: the failure a checker raises, errors put in words that name no
host, address, path or credential, secrets read from `env:` and `file:` references, and blocking
calls run in a thread of their own."""

from __future__ import annotations

import asyncio
import errno
import os
import socket
import ssl
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from petsage_grpc.checks.spec import SpecError

T = TypeVar("T")


class CheckFailed(Exception):
    """The dependency answered, and the answer is a failure; the message is fit to show."""


def words(error: BaseException) -> str:
    """What went wrong, in words that name no host, address, path or credential."""
    if isinstance(error, CheckFailed):
        return str(error)
    for each in _causes(error):
        if isinstance(each, TimeoutError):
            return "timed out"
        if isinstance(each, socket.gaierror):
            return "name does not resolve"
        if isinstance(each, ssl.SSLCertVerificationError):
            return "TLS certificate not trusted"
        if isinstance(each, ssl.SSLError):
            return "TLS handshake failed"
        if isinstance(each, OSError) and each.errno is not None:
            return _ERRNO_WORDS.get(each.errno) or (os.strerror(each.errno).lower())
    name = type(error).__name__
    return _HTTPX_WORDS.get(name, "cannot connect" if isinstance(error, OSError) else name)


_ERRNO_WORDS = {
    errno.ECONNREFUSED: "connection refused",
    errno.ECONNRESET: "connection reset",
    errno.EHOSTUNREACH: "host unreachable",
    errno.ENETUNREACH: "network unreachable",
    errno.ETIMEDOUT: "timed out",
    errno.EPIPE: "connection closed",
}
_HTTPX_WORDS = {
    "ConnectTimeout": "timed out",
    "ReadTimeout": "timed out",
    "WriteTimeout": "timed out",
    "PoolTimeout": "timed out",
    "ConnectError": "cannot connect",
    "ReadError": "connection lost",
    "WriteError": "connection lost",
    "RemoteProtocolError": "invalid HTTP response",
    "LocalProtocolError": "invalid HTTP request",
    "UnsupportedProtocol": "unsupported URL scheme",
}


def _causes(error: BaseException) -> list[BaseException]:
    chain: list[BaseException] = []
    each: BaseException | None = error
    while each is not None and each not in chain:
        chain.append(each)
        each = each.__cause__ or each.__context__
    return chain


def read_secret(value: str, what: str) -> str:
    """A setting's value, or what `env:NAME` / `file:PATH` points at. Raises SpecError."""
    if value.startswith("env:"):
        name = value[len("env:") :]
        if name not in os.environ:
            raise SpecError(what, f"the environment variable {name} is not set")
        return os.environ[name]
    if value.startswith("file:"):
        path = value[len("file:") :]
        try:
            with open(path, encoding="utf-8") as file:
                return file.read().strip()
        except OSError as exc:
            raise SpecError(what, f"cannot read {path}: {exc.strerror}") from None
    return value


async def in_own_thread(function: Callable[..., T], *args: Any) -> T:
    """`function(*args)` in a new daemon thread: a call that never returns holds that thread
    only, never a shared pool, and never the process's exit."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def settle(outcome: Callable[[], None]) -> None:
        if not future.done():
            outcome()

    def work() -> None:
        try:
            result = function(*args)
        except BaseException as exc:  # delivered to the awaiting task
            error = exc
            loop.call_soon_threadsafe(settle, lambda: future.set_exception(error))
        else:
            loop.call_soon_threadsafe(settle, lambda: future.set_result(result))

    threading.Thread(target=work, name="petsage-blocking", daemon=True).start()
    return await future
