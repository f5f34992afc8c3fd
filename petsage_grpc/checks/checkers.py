"""Checkers: what one dependency check does, for each kind.

A checker's `run()` returns when the dependency is healthy and raises `CheckFailed` saying why
when it is not; the runner calls it every interval, bounded by the timeout. A checker that can
be told of changes instead (`grpc`: a Watch of the upstream) also has `follow(report)`, which the
runner runs instead of polling: it reports each status the dependency pushes, and returns only to
fall back to polling (an upstream without Watch).

Network checks are async-native: they run on the event loop, hold no thread, and a cancelled run
closes its connection. The one check that must block (the file system) runs in a thread of its
own, so a hung mount cannot starve anything else. Errors are words, never hosts, addresses, paths
or credentials (`connection refused`, `HTTP 503`, `upstream NOT_SERVING`); the exception behind
them, which may name more, is kept as the cause for the server log.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import inspect
import os
import ssl
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, runtime_checkable

from petsage_grpc.checks.base import CheckFailed, in_own_thread, read_secret, words
from petsage_grpc.checks.spec import CheckSpec, PythonCheck, SpecError, parse_free_space
from petsage_grpc.values import split_host_port

if TYPE_CHECKING:
    import grpc

T = TypeVar("T")

Report = Callable[[str | None, float, bool], None]
"""What `follow()` tells the runner: None if healthy, else why; the latency; and whether the
dependency itself said so (a pushed status, which takes effect at once) or not (the stream is
down, which counts toward the failure threshold)."""

GAP_BACKOFF = (0.05, 5.0)
"""Seconds between reconnection attempts of a followed check: the first, and the most."""


class Checker(Protocol):
    async def run(self) -> None: ...

    async def close(self) -> None: ...


@runtime_checkable
class Follower(Checker, Protocol):
    async def follow(self, report: Report) -> None: ...


def make_checker(spec: CheckSpec) -> Checker:
    """The checker of `spec`. Raises SpecError if it cannot be set up (a python target that does
    not import, a TLS or header file that cannot be read)."""
    if spec.kind in ("postgres", "redis"):
        from petsage_grpc.checks.datastores import PostgresChecker, RedisChecker

        return PostgresChecker(spec) if spec.kind == "postgres" else RedisChecker(spec)
    makers: dict[str, Callable[[CheckSpec], Checker]] = {
        "tcp": TcpChecker,
        "grpc": GrpcChecker,
        "http": HttpChecker,
        "file": FileChecker,
        "disk": DiskChecker,
        "python": PythonChecker,
    }
    return makers[spec.kind](spec)


def _read_file(path: str, key: str) -> bytes:
    try:
        with open(path, "rb") as file:
            return file.read()
    except OSError as exc:
        raise SpecError(key, f"cannot read {path}: {exc.strerror}") from None


class TcpChecker:
    """Passes when a TCP connection opens."""

    def __init__(self, spec: CheckSpec) -> None:
        assert isinstance(spec.target, str)
        self._host, self._port = split_host_port(spec.target)

    async def run(self) -> None:
        try:
            _, writer = await asyncio.open_connection(self._host, self._port)
        except OSError as exc:
            raise CheckFailed(words(exc)) from exc
        writer.close()
        with contextlib.suppress(OSError):  # it opened: that is all this check asks
            await writer.wait_closed()

    async def close(self) -> None:
        return None


class HttpChecker:
    """Passes when GET answers an expected status (default 2xx-3xx); redirects are not followed,
    the body is not read. On httpx, imported only when an http check is configured."""

    def __init__(self, spec: CheckSpec) -> None:
        assert isinstance(spec.target, str)
        self._spec = spec
        self._url = spec.target
        self._headers = {"User-Agent": "petsage-grpc"} | {
            name: read_secret(value, f"headers: {name}") for name, value in spec.headers
        }
        self._verify: ssl.SSLContext | bool = True
        if spec.target.startswith("https://"):
            self._verify = _client_ssl_context(spec)
        self._client: Any = None

    async def run(self) -> None:
        import httpx  # here: servers without http checks never load it

        if self._client is None:
            self._client = httpx.AsyncClient(
                verify=self._verify,
                follow_redirects=False,
                trust_env=False,  # no proxies, .netrc or SSL_* from the environment
                timeout=httpx.Timeout(self._spec.timeout),
                headers=self._headers,
            )
        try:
            async with self._client.stream("GET", self._url) as response:
                status = response.status_code
        except httpx.HTTPError as exc:
            raise CheckFailed(words(exc)) from exc
        except OSError as exc:
            raise CheckFailed(words(exc)) from exc
        if not any(low <= status <= high for low, high in self._spec.expect_status):
            raise CheckFailed(f"HTTP {status}")

    async def close(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            await client.aclose()


def _client_ssl_context(spec: CheckSpec) -> ssl.SSLContext:
    try:
        context = ssl.create_default_context(cafile=spec.tls_ca or None)
    except (OSError, ssl.SSLError) as exc:
        raise SpecError("tls_ca", f"cannot use {spec.tls_ca}: {exc}") from None
    if spec.tls_cert:
        try:
            context.load_cert_chain(spec.tls_cert, spec.tls_key)
        except (OSError, ssl.SSLError) as exc:
            raise SpecError("tls_cert", f"cannot use {spec.tls_cert}: {exc}") from None
    return context


class GrpcChecker:
    """Follows the upstream's `grpc.health.v1` Watch of `service`: each status it pushes is
    reported at once. A broken stream is reconnected with backoff; an upstream that answers Watch
    UNIMPLEMENTED is polled with Check instead."""

    def __init__(self, spec: CheckSpec) -> None:
        assert isinstance(spec.target, str)
        self._spec = spec
        self._credentials: tuple[bytes | None, bytes | None, bytes | None] | None = None
        if spec.tls:
            self._credentials = (
                _read_file(spec.tls_ca, "tls_ca") if spec.tls_ca else None,
                _read_file(spec.tls_key, "tls_key") if spec.tls_key else None,
                _read_file(spec.tls_cert, "tls_cert") if spec.tls_cert else None,
            )
        self._channel: grpc.aio.Channel | None = None  # made on first use: it needs the loop

    def _stub(self) -> Any:
        import grpc
        from grpc_health.v1 import health_pb2_grpc

        if self._channel is None:
            options: list[tuple[str, Any]] = [
                # Notice an upstream gone silent (a partition) while its stream is open.
                ("grpc.keepalive_time_ms", 20_000),
                ("grpc.keepalive_timeout_ms", int(max(self._spec.timeout, 1.0) * 1000)),
                ("grpc.primary_user_agent", "petsage-grpc"),
            ]
            target = self._spec.target
            assert isinstance(target, str)
            if self._credentials is None:
                self._channel = grpc.aio.insecure_channel(target, options=options)
            else:
                if self._spec.tls_server_name:
                    options.append(("grpc.ssl_target_name_override", self._spec.tls_server_name))
                credentials = grpc.ssl_channel_credentials(*self._credentials)
                self._channel = grpc.aio.secure_channel(target, credentials, options=options)
        return health_pb2_grpc.HealthStub(self._channel)

    def _request(self) -> Any:
        from grpc_health.v1 import health_pb2

        return health_pb2.HealthCheckRequest(service=self._spec.service)

    def _verdict(self, status: int) -> str | None:
        from grpc_health.v1 import health_pb2

        if status == health_pb2.HealthCheckResponse.SERVING:
            return None
        if status == health_pb2.HealthCheckResponse.SERVICE_UNKNOWN:
            return f"upstream does not know service {self._spec.service!r}"
        return f"upstream {health_pb2.HealthCheckResponse.ServingStatus.Name(status)}"

    async def run(self) -> None:
        """One Check (for an upstream without Watch)."""
        import grpc

        try:
            response = await self._stub().Check(self._request(), timeout=self._spec.timeout)
        except grpc.aio.AioRpcError as exc:
            raise CheckFailed(_rpc_words(exc)) from exc
        if (problem := self._verdict(response.status)) is not None:
            raise CheckFailed(problem)

    async def follow(self, report: Report) -> None:
        import grpc

        backoff = GAP_BACKOFF[0]
        gap: asyncio.Task[None] | None = None
        why = ["no status yet"]  # why the stream is down, for the gap's reports
        try:
            while True:
                started = time.monotonic()
                call = self._stub().Watch(self._request())
                try:
                    async for response in call:
                        if gap is not None:
                            gap.cancel()
                            gap = None
                        backoff = GAP_BACKOFF[0]
                        report(self._verdict(response.status), time.monotonic() - started, True)
                        started = time.monotonic()
                    why[0] = "upstream ended the Watch stream"
                except grpc.aio.AioRpcError as exc:
                    if exc.code() == grpc.StatusCode.UNIMPLEMENTED:
                        return  # no Watch here: the runner polls Check instead
                    why[0] = _rpc_words(exc)
                if gap is None:
                    gap = asyncio.create_task(self._count_gap(report, why))
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, GAP_BACKOFF[1])
        finally:
            if gap is not None:
                gap.cancel()

    async def _count_gap(self, report: Report, why: list[str]) -> None:
        """While the stream is down: a failure once `timeout` has passed, then every interval."""
        await asyncio.sleep(self._spec.timeout)
        while True:
            report(why[0], 0.0, False)
            await asyncio.sleep(self._spec.interval)

    async def close(self) -> None:
        if self._channel is not None:
            channel, self._channel = self._channel, None
            await channel.close()


def _rpc_words(error: Any) -> str:
    """A failed health RPC in words: its code, never grpc's details (they name addresses)."""
    name = error.code().name
    return {
        "UNAVAILABLE": "upstream unavailable",
        "DEADLINE_EXCEEDED": "timed out",
        "NOT_FOUND": f"upstream does not know the service ({name})",
        "UNIMPLEMENTED": "upstream does not serve grpc.health.v1",
    }.get(name, f"upstream answered {name}")


class FileChecker:
    """Passes when the path does **not** exist (a drain file). The look runs in a thread of its
    own, so a hung file system holds only this check."""

    def __init__(self, spec: CheckSpec) -> None:
        assert isinstance(spec.target, str)
        self._path = spec.target

    async def run(self) -> None:
        if await in_own_thread(os.path.lexists, self._path):
            raise CheckFailed("the file exists")

    async def close(self) -> None:
        return None


class DiskChecker:
    """Passes when the file system holding the path has at least `min_free` free (bytes, or a
    share of its size), as Spring Boot's diskSpace indicator; it looks in a thread of its own,
    so a hung file system holds only this check."""

    def __init__(self, spec: CheckSpec) -> None:
        assert isinstance(spec.target, str)
        self._path = spec.target
        self._unit, self._least = parse_free_space(spec.min_free)
        self._wanted = spec.min_free

    async def run(self) -> None:
        try:
            stats = await in_own_thread(os.statvfs, self._path)
        except OSError as exc:
            raise CheckFailed(words(exc)) from exc
        free = stats.f_bavail * stats.f_frsize  # what an unprivileged process may still use
        size = stats.f_blocks * stats.f_frsize
        if self._unit == "percent":
            share = 100.0 * free / size if size else 0.0
            if share < self._least:
                raise CheckFailed(f"{share:.1f}% free, less than {self._wanted}")
        elif free < self._least:
            raise CheckFailed(f"{format_bytes(free)} free, less than {self._wanted}")

    async def close(self) -> None:
        return None


def format_bytes(count: float) -> str:
    """`512.0 MiB`, `1.5 GiB`: sizes as people read them."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if count < 1024 or unit == "TiB":
            return f"{count:.1f} {unit}" if unit != "B" else f"{int(count)} B"
        count /= 1024
    raise AssertionError("unreachable")


class PythonChecker:
    """Passes when the coroutine function returns without raising and does not return False."""

    def __init__(self, spec: CheckSpec) -> None:
        self._function = resolve_python_check(spec.target)

    async def run(self) -> None:
        if await self._function() is False:
            raise CheckFailed("returned False")

    async def close(self) -> None:
        return None


def resolve_python_check(target: str | PythonCheck) -> PythonCheck:
    """The coroutine function named `module:function`. The working directory is importable,
    after the standard library and the installed packages: a file there never shadows a module
    the server needs (a python check target, like the config file, is trusted: it runs code).

    Raises SpecError saying what is wrong with the target.
    """
    if not isinstance(target, str):
        function = target
    else:
        module_name, _, attribute = target.partition(":")
        if "" not in sys.path and os.getcwd() not in sys.path:
            sys.path.append(os.getcwd())
        try:
            module = importlib.import_module(module_name)
        except Exception as exc:
            raise SpecError("target", f"cannot import {module_name!r}: {exc}") from None
        try:
            function = getattr(module, attribute)
        except AttributeError:
            raise SpecError("target", f"{module_name!r} has no {attribute!r}") from None
    if not inspect.iscoroutinefunction(function):
        raise SpecError("target", f"{target!r} is not an async function")
    return function
