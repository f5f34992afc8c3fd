"""Checkers: what one run of a dependency check does, for each kind. A checker's `run()` returns
when the dependency is healthy and raises `CheckFailed` (or any exception) saying why when it is
not. Timeouts and scheduling are the runner's job, not the checker's.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import os
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from petsage_grpc.checks.spec import CheckSpec, PythonCheck, SpecError
from petsage_grpc.values import split_host_port


class CheckFailed(Exception):
    """The dependency answered, and the answer is a failure."""


@dataclass(frozen=True)
class Checker:
    """Runs one check once; `close()` releases what it holds (a gRPC channel)."""

    run: Callable[[], Awaitable[None]]
    close: Callable[[], Awaitable[None]]


async def _nothing() -> None:
    return None


def make_checker(spec: CheckSpec) -> Checker:
    """The checker of `spec`. Raises SpecError if a python target cannot be imported."""
    if spec.kind == "grpc":
        return _grpc_checker(spec)
    makers: dict[str, Callable[[CheckSpec], Callable[[], Awaitable[None]]]] = {
        "tcp": _tcp_check,
        "http": _http_check,
        "file": _file_check,
        "python": _python_check,
    }
    return Checker(makers[spec.kind](spec), _nothing)


def _tcp_check(spec: CheckSpec) -> Callable[[], Awaitable[None]]:
    assert isinstance(spec.target, str)
    host, port = split_host_port(spec.target)

    async def run() -> None:
        _, writer = await asyncio.open_connection(host, port)
        writer.close()
        await writer.wait_closed()

    return run


def _grpc_checker(spec: CheckSpec) -> Checker:
    assert isinstance(spec.target, str)
    target = spec.target
    request = health_pb2.HealthCheckRequest(service=spec.service)
    channels: list[grpc.aio.Channel] = []  # made on first use: a channel belongs to its loop

    async def run() -> None:
        if not channels:
            channels.append(grpc.aio.insecure_channel(target))
        try:
            response = await health_pb2_grpc.HealthStub(channels[0]).Check(
                request, timeout=spec.timeout
            )
        except grpc.aio.AioRpcError as exc:
            raise CheckFailed(f"{exc.code().name}: {exc.details()}") from None
        if response.status != health_pb2.HealthCheckResponse.SERVING:
            name = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
            raise CheckFailed(f"{spec.service or 'the server'} is {name}")

    async def close() -> None:
        for channel in channels:
            await channel.close()

    return Checker(run, close)


def _http_check(spec: CheckSpec) -> Callable[[], Awaitable[None]]:
    import http.client  # here: only servers with http checks pay for importing it
    import urllib.parse

    assert isinstance(spec.target, str)
    url = urllib.parse.urlsplit(spec.target)
    connection_class = (
        http.client.HTTPSConnection if url.scheme == "https" else http.client.HTTPConnection
    )
    path = urllib.parse.urlunsplit(("", "", url.path or "/", url.query, ""))

    def get() -> None:
        # http.client blocks, so this runs in a worker thread; its socket timeout bounds it.
        connection = connection_class(url.netloc, timeout=spec.timeout)
        try:
            connection.request("GET", path, headers={"User-Agent": "petsage-grpc"})
            status = connection.getresponse().status
        finally:
            connection.close()
        if not 200 <= status < 400:
            raise CheckFailed(f"HTTP {status}")

    async def run() -> None:
        await asyncio.to_thread(get)

    return run


def _file_check(spec: CheckSpec) -> Callable[[], Awaitable[None]]:
    assert isinstance(spec.target, str)
    path = spec.target

    async def run() -> None:
        if await asyncio.to_thread(os.path.lexists, path):
            raise CheckFailed(f"{path} exists")

    return run


def _python_check(spec: CheckSpec) -> Callable[[], Awaitable[None]]:
    function = resolve_python_check(spec.target)

    async def run() -> None:
        if await function() is False:
            raise CheckFailed("returned False")

    return run


def resolve_python_check(target: str | PythonCheck) -> PythonCheck:
    """The coroutine function named `module:function` (the working directory is importable).

    Raises SpecError saying what is wrong with the target.
    """
    if not isinstance(target, str):
        function = target
    else:
        module_name, _, attribute = target.partition(":")
        if "" not in sys.path and os.getcwd() not in sys.path:
            sys.path.insert(0, "")
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
