"""The client commands: `probe` (a drop-in for grpc_health_probe), `watch`, `list` and `smoke`.

Flags are spelled as grpc_health_probe spells them (`-addr`, `-rpc-timeout`, ...; Go's flag syntax:
one or two dashes, `-flag value` or `-flag=value`, durations such as `1s` or `250ms`), and the exit
codes are its codes:

0 success (SERVING; for smoke, OK) · 1 invalid arguments · 2 connection failure ·
3 RPC failure · 4 not SERVING (for smoke, FAILING) · 5 smoke only: DEGRADED ·
6 smoke -each only: an endpoint on another version than -expect-version ·
7 smoke -each only: fewer endpoints than -min-endpoints

`probe` writes its one line to stderr, as grpc_health_probe does; the other commands write their
results to stdout and errors to stderr (and `smoke -each -wait` its progress). An exec probe runs
this every few seconds in every pod, so this module imports only grpc, the health messages,
argparse and the address file's reader (the SmokeService stubs only for `smoke`,
`petsage_grpc.client` only for `smoke -each`), and nothing of the server.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TextIO

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from petsage_grpc import addresses
from petsage_grpc.commands.grpc_health_probe import (
    EXIT_ARGS,
    EXIT_CONNECT,
    EXIT_DEGRADED,
    EXIT_OK,
    EXIT_RPC,
    EXIT_TOO_FEW,
    EXIT_UNHEALTHY,
    EXIT_VERSION,
    Exit,
    build_parser,
    format_go_duration,
    go_quote,
    go_status,
    no_verify_roots,
    validate,
)

if TYPE_CHECKING:
    from petsage_grpc.client import Endpoint, EndpointResult


def _read(path: str, what: str) -> bytes:
    try:
        with open(path, "rb") as file:
            return file.read()
    except OSError as exc:
        raise Exit(
            EXIT_ARGS,
            f"failed to initialize tls credentials. error=cannot read {what} {path}: "
            f"{exc.strerror}",
        ) from None


def address_from_file(args: argparse.Namespace, command: str) -> str:
    """For -addr-file: where to connect to the server that wrote it. Health commands without
    -tls take its plaintext health-only port when it has one; otherwise its main port."""
    try:
        listeners = addresses.read(args.addr_file)
    except addresses.AddressFileError as exc:
        raise Exit(EXIT_CONNECT, f"error: {exc}") from None
    name = "health" if "health" in listeners and not args.tls and command != "smoke" else "main"
    listener = listeners[name]
    speaks_tls = listener.security != addresses.PLAINTEXT
    if speaks_tls != bool(args.tls):
        advice = "add -tls" if speaks_tls else "leave out -tls"
        raise Exit(
            EXIT_ARGS,
            f"error: {args.addr_file}: the server's {name} port speaks {listener.security}: "
            f"{advice}",
        )
    return addresses.connect_address(listener)


def open_channel(args: argparse.Namespace) -> grpc.Channel:
    """A channel to `-addr` as the flags say; waits until connected (exit 2 on failure).

    Nobody closes it: a client command ends the process when done, which is far cheaper.
    """
    if args.addr.startswith(":"):  # as grpc-go dials it: ":50051" is this machine
        args.addr = "localhost" + args.addr
    options: list[tuple[str, Any]] = [("grpc.primary_user_agent", args.user_agent)]
    if args.tls:
        roots = _read(args.tls_ca_cert, "CA certificates") if args.tls_ca_cert else None
        server_name = args.tls_server_name
        if args.tls_no_verify:
            roots, server_name = no_verify_roots(args.addr, args.connect_timeout)
        key = _read(args.tls_client_key, "client key") if args.tls_client_key else None
        chain = _read(args.tls_client_cert, "client certificate") if args.tls_client_cert else None
        credentials = grpc.ssl_channel_credentials(roots, key, chain)
        if server_name:
            options.append(("grpc.ssl_target_name_override", server_name))
        channel = grpc.secure_channel(args.addr, credentials, options=options)
    else:
        channel = grpc.insecure_channel(args.addr, options=options)
    _verbose(args, "establishing connection")
    started = time.monotonic()
    try:
        grpc.channel_ready_future(channel).result(timeout=args.connect_timeout)
    except grpc.FutureTimeoutError:
        raise Exit(
            EXIT_CONNECT,
            f"timeout: failed to connect service {go_quote(args.addr)} within "
            f"{format_go_duration(args.connect_timeout)}",
        ) from None
    args.connect_took = time.monotonic() - started
    _verbose(args, f"connection established (took {format_go_duration(args.connect_took)})")
    return channel


def _call_kwargs(args: argparse.Namespace, timeout: float | None) -> dict[str, Any]:
    metadata = []
    for header in args.rpc_header:
        name, _, value = header.partition(":")
        metadata.append((name.strip().lower(), value.strip()))
    kwargs: dict[str, Any] = {"timeout": timeout, "metadata": metadata or None}
    if args.gzip:
        kwargs["compression"] = grpc.Compression.Gzip
    return kwargs


def _rpc_failure(error: grpc.RpcError, args: argparse.Namespace, what: str = "health") -> Exit:
    code = error.code()
    if code == grpc.StatusCode.UNIMPLEMENTED:
        service = "petsage.v1.SmokeService" if what == "smoke" else "grpc.health.v1.Health"
        detail = " List" if what == "list" else ""
        return Exit(
            EXIT_RPC,
            f"error: this server does not implement{detail} ({service}){_details(error)}"
            if detail or what == "smoke"
            else "error: this server does not implement the grpc health protocol "
            "(grpc.health.v1.Health)",
        )
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return Exit(
            EXIT_RPC,
            f"timeout: {what} rpc did not complete within {format_go_duration(args.rpc_timeout)}",
        )
    return Exit(EXIT_RPC, f"error: {what} rpc failed: {go_status(error)}")


def _details(error: grpc.RpcError) -> str:
    details = error.details()
    return f": {details}" if details else ""


def _verbose(args: argparse.Namespace, message: str) -> None:
    if args.v:
        print(message, file=sys.stderr)


def _status_name(status: int) -> str:
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(status))


# --- the commands -----------------------------------------------------------------------------


def probe(args: argparse.Namespace) -> int:
    channel = open_channel(args)
    started = time.monotonic()
    try:
        response = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=args.service),
            **_call_kwargs(args, args.rpc_timeout),
        )
    except grpc.RpcError as error:
        raise _rpc_failure(error, args) from None
    took = time.monotonic() - started
    status = _status_name(response.status)
    if response.status != health_pb2.HealthCheckResponse.SERVING:
        raise Exit(EXIT_UNHEALTHY, f"service unhealthy (responded with {go_quote(status)})")
    _verbose(
        args,
        f"time elapsed: connect={format_go_duration(args.connect_took)} "
        f"rpc={format_go_duration(took)}",
    )
    print(f"status: {status}", file=sys.stderr)
    return EXIT_OK


def watch(args: argparse.Namespace) -> int:
    """Print each status as it comes; the exit code follows the last one (0 SERVING, else 4)."""
    last: int | None = None
    channel = open_channel(args)
    call = health_pb2_grpc.HealthStub(channel).Watch(
        health_pb2.HealthCheckRequest(service=args.service), **_call_kwargs(args, None)
    )
    first_late = threading.Timer(args.rpc_timeout, call.cancel)
    first_late.start()
    try:
        for response in call:
            first_late.cancel()
            last = response.status
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime())
            print(f"{stamp}Z status: {_status_name(last)}", flush=True)
    except grpc.RpcError as error:
        if error.code() == grpc.StatusCode.CANCELLED and last is None:
            raise Exit(
                EXIT_RPC,
                "timeout: health rpc did not complete within "
                f"{format_go_duration(args.rpc_timeout)}",
            ) from None
        if error.code() != grpc.StatusCode.CANCELLED:
            raise _rpc_failure(error, args) from None
    except KeyboardInterrupt:
        call.cancel()
    finally:
        first_late.cancel()
    if last is None:
        raise Exit(EXIT_RPC, "error: the Watch stream ended before any status")
    return EXIT_OK if last == health_pb2.HealthCheckResponse.SERVING else EXIT_UNHEALTHY


def list_services(args: argparse.Namespace) -> int:
    channel = open_channel(args)
    try:
        response = health_pb2_grpc.HealthStub(channel).List(
            health_pb2.HealthListRequest(), **_call_kwargs(args, args.rpc_timeout)
        )
    except grpc.RpcError as error:
        raise _rpc_failure(error, args, "list") from None
    rows = sorted((name or '""', _status_name(r.status)) for name, r in response.statuses.items())
    _print_table([("SERVICE", "STATUS"), *rows])
    return EXIT_OK


def smoke(args: argparse.Namespace) -> int:
    from petsage_grpc._gen.petsage.v1 import smoke_pb2, smoke_pb2_grpc

    if args.each:
        return smoke_each(args)
    channel = open_channel(args)
    try:
        response = smoke_pb2_grpc.SmokeServiceStub(channel).SmokeTest(
            smoke_pb2.SmokeTestRequest(run_checks=args.deep),
            **_call_kwargs(args, args.rpc_timeout),
        )
    except grpc.RpcError as error:
        raise _rpc_failure(error, args, "smoke") from None
    if args.json:
        from google.protobuf import json_format

        print(json_format.MessageToJson(response, always_print_fields_with_no_presence=True))
    else:
        _print_smoke(response)
    return {
        smoke_pb2.SMOKE_STATUS_OK: EXIT_OK,
        smoke_pb2.SMOKE_STATUS_DEGRADED: EXIT_DEGRADED,
    }.get(response.status, EXIT_UNHEALTHY)


def _print_smoke(response: Any) -> None:
    from petsage_grpc._gen.petsage.v1 import smoke_pb2

    status = smoke_pb2.SmokeStatus.Name(response.status).removeprefix("SMOKE_STATUS_")
    uptime = format_go_duration(round(response.uptime.ToNanoseconds() / 1e9, 3))
    head = [("status", status), ("message", response.message), ("version", response.version)]
    if response.instance:  # older servers do not say
        head.append(("instance", response.instance))
    head.append(("uptime", uptime))
    if response.HasField("start_time"):
        started = response.start_time.ToDatetime().strftime("%Y-%m-%dT%H:%M:%SZ")
        head.append(("started", started))
    _print_table(head)
    if response.checks:
        print()
        rows = [("CHECK", "KIND", "REQUIRED", "PASSING", "LATENCY", "LAST ERROR")]
        for check in response.checks:
            latency = check.last_latency.ToNanoseconds() / 1e9
            rows.append(
                (
                    check.name,
                    check.kind,
                    "yes" if check.required else "no",
                    "yes" if check.passing else "no",
                    format_go_duration(latency) if check.HasField("last_latency") else "-",
                    check.last_error,
                )
            )
        _print_table(rows)


# --- smoke -each -------------------------------------------------------------------------------

ROUND_INTERVAL = 1.0
"""Seconds between two rounds of `smoke -each -wait`."""

PLAIN_PROGRESS_EVERY = 10.0
"""Off a terminal, a progress line is printed when the summary changes, and at least this often."""

# An endpoint's problem, from the most to the least serious: the run's exit code is the code of
# the most serious problem any endpoint has. The summary counts them in _SUMMARY_ORDER.
_PROBLEMS = (
    ("unreachable", EXIT_CONNECT),
    ("call failed", EXIT_RPC),
    ("FAILING", EXIT_UNHEALTHY),
    ("version", EXIT_VERSION),
    ("DEGRADED", EXIT_DEGRADED),
)
_SUMMARY_ORDER = ("version", "DEGRADED", "FAILING", "call failed", "unreachable")
_PROBLEM_OF_STATUS = {
    "UNREACHABLE": "unreachable",
    "ERROR": "call failed",
    "FAILING": "FAILING",
    "DEGRADED": "DEGRADED",
}


def smoke_each(args: argparse.Namespace) -> int:
    """SmokeTest on every endpoint -addr resolves to, again every second until each is OK (and
    on -expect-version) or -wait passes; then the table of the last round and its verdict."""
    opener = _endpoint_opener(args)
    started = time.monotonic()
    progress = _Progress(sys.stderr, args.wait)
    try:
        while True:
            results, unresolved = _smoke_round(args, opener)
            code, summary = _each_verdict(results, unresolved, args)
            elapsed = time.monotonic() - started
            if code == EXIT_OK or elapsed >= args.wait:
                break
            progress.show(summary, elapsed)
            time.sleep(min(ROUND_INTERVAL, args.wait - elapsed))
    finally:
        progress.end()
    if args.json:
        _print_each_json(results, summary, code, args)
    else:
        _print_each(results, args.expect_version)
        print(summary)
    return code


def _endpoint_opener(args: argparse.Namespace) -> Callable[[Endpoint], grpc.Channel]:
    """How to open a channel to one endpoint, as the flags say (the TLS files read once)."""
    from petsage_grpc.client import endpoint_channel

    options: list[tuple[str, Any]] = [("grpc.primary_user_agent", args.user_agent)]
    if not args.tls:
        return lambda endpoint: endpoint_channel(endpoint, options=options)
    roots = _read(args.tls_ca_cert, "CA certificates") if args.tls_ca_cert else None
    key = _read(args.tls_client_key, "client key") if args.tls_client_key else None
    chain = _read(args.tls_client_cert, "client certificate") if args.tls_client_cert else None
    if not args.tls_no_verify:
        credentials = grpc.ssl_channel_credentials(roots, key, chain)
        server_name = args.tls_server_name or None
        return lambda endpoint: endpoint_channel(
            endpoint, credentials=credentials, server_name=server_name, options=options
        )

    def trust_what_it_presents(endpoint: Endpoint) -> grpc.Channel:
        try:
            pinned, name = no_verify_roots(endpoint.address, args.connect_timeout)
        except Exit as failure:
            raise OSError(failure.message.removeprefix("error: ")) from None
        credentials = grpc.ssl_channel_credentials(pinned, key, chain)
        return endpoint_channel(
            endpoint, credentials=credentials, server_name=name, options=options
        )

    return trust_what_it_presents


def _smoke_round(
    args: argparse.Namespace, opener: Callable[[Endpoint], grpc.Channel]
) -> tuple[list[EndpointResult], str]:
    """One SmokeTest per endpoint; and why there are none, when the name does not resolve."""
    from petsage_grpc import client

    call = _call_kwargs(args, args.rpc_timeout)
    try:
        results = client.smoke_each(
            args.addr,
            run_checks=args.deep,
            connect_timeout=args.connect_timeout,
            timeout=args.rpc_timeout,
            concurrency=args.concurrency,
            metadata=call["metadata"] or (),
            compression=call.get("compression"),
            open_channel=opener,
        )
    except client.ResolveError as exc:
        _verbose(args, f"no endpoints: {exc}")
        return [], str(exc)
    except ValueError as exc:
        raise Exit(EXIT_ARGS, f"error: -addr: {exc}") from None
    _verbose(args, f"endpoints: {', '.join(result.address for result in results)}")
    return results, ""


def _problem(result: EndpointResult, expected: str | None) -> str | None:
    """An endpoint's most serious problem (a name of _PROBLEMS), or None when it is OK."""
    problem = _PROBLEM_OF_STATUS.get(result.status)
    if problem in ("unreachable", "call failed", "FAILING"):
        return problem
    if expected is not None and result.version != expected:
        return "version"
    return problem


def _each_verdict(
    results: list[EndpointResult], unresolved: str, args: argparse.Namespace
) -> tuple[int, str]:
    """The run's exit code and its summary: `3/5 endpoints OK on 1.4.0, 1 DEGRADED, ...`."""
    expected = args.expect_version
    problems = [_problem(result, expected) for result in results]
    good = [result for result, problem in zip(results, problems, strict=True) if problem is None]
    versions = Counter(result.version for result in good)
    head = f"{len(good)}/{len(results)} endpoints OK"
    if expected is not None:
        head += f" on {expected}"
    elif len(versions) == 1:
        head += f" on {next(iter(versions))}"
    elif versions:
        head += " (" + ", ".join(f"{n} on {v}" for v, n in sorted(versions.items())) + ")"
    parts = [head]
    for name in _SUMMARY_ORDER:
        if name == "version":
            wrong = Counter(
                r.version for r, problem in zip(results, problems, strict=True) if problem == name
            )
            parts += [f"{n} on {v or 'no version'}" for v, n in sorted(wrong.items())]
        elif count := problems.count(name):
            parts.append(f"{count} {name}")
    summary = f"0 endpoints: {unresolved}" if unresolved else ", ".join(parts)
    if len(results) < args.min_endpoints:
        return EXIT_TOO_FEW, f"{summary}; want at least {args.min_endpoints}"
    codes = [code for name, code in _PROBLEMS if name in problems]
    return (codes[0] if codes else EXIT_OK), summary


def _detail(result: EndpointResult, expected: str | None) -> str:
    """Why an endpoint is not OK, in a few words."""
    if result.response is None:
        return result.error
    parts = []
    if expected is not None and result.version != expected:
        parts.append(f"expected version {expected}")
    failing = [f"{name}: {error}" if error else name for name, error in result.failing_checks]
    parts += failing
    if result.status != "OK" and not failing:
        parts.append(result.response.message)
    return "; ".join(parts)


def _print_each(results: list[EndpointResult], expected: str | None) -> None:
    if not results:
        return
    rows = [("ENDPOINT", "INSTANCE", "VERSION", "STATUS", "UPTIME", "DETAIL")]
    for result in results:
        uptime = result.uptime
        rows.append(
            (
                result.address,
                result.instance or "-",
                result.version or "-",
                result.status,
                "-" if uptime is None else format_go_duration(round(uptime, 1)),
                _detail(result, expected),
            )
        )
    _print_table(rows)


def _print_each_json(
    results: list[EndpointResult], summary: str, code: int, args: argparse.Namespace
) -> None:
    import json

    endpoints = []
    for result in results:
        entry: dict[str, Any] = {"address": result.address, "status": result.status}
        if result.response is not None:
            response = result.response
            entry.update(
                instance=response.instance,
                version=response.version,
                uptime=response.uptime.ToJsonString(),
                message=response.message,
                failingChecks=[
                    {"name": name, "error": error} for name, error in result.failing_checks
                ],
            )
            if response.HasField("start_time"):
                entry["startTime"] = response.start_time.ToJsonString()
        if result.error:
            entry["error"] = result.error
        endpoints.append(entry)
    body = {
        "target": args.addr,
        "expectVersion": args.expect_version,
        "minEndpoints": args.min_endpoints,
        "endpoints": endpoints,
        "summary": summary,
        "exitCode": code,
    }
    print(json.dumps(body, indent=2, ensure_ascii=False))


class _Progress:
    """`smoke -each -wait`'s progress on stderr: one line updated in place on a terminal, plain
    lines otherwise (when the summary changes, and every PLAIN_PROGRESS_EVERY seconds)."""

    def __init__(self, stream: TextIO, wait: float) -> None:
        self._stream = stream
        self._wait = wait
        self._terminal = stream.isatty()
        self._shown = False
        self._last = ""
        self._last_at = -PLAIN_PROGRESS_EVERY

    def show(self, summary: str, elapsed: float) -> None:
        line = (
            f"[{format_go_duration(round(elapsed))} of {format_go_duration(self._wait)}] {summary}"
        )
        if self._terminal:
            width = shutil.get_terminal_size().columns - 1
            self._stream.write(f"\r\x1b[K{line[:width]}")
            self._stream.flush()
            self._shown = True
        elif summary != self._last or elapsed - self._last_at >= PLAIN_PROGRESS_EVERY:
            print(line, file=self._stream, flush=True)
            self._last, self._last_at = summary, elapsed

    def end(self) -> None:
        """Clear the updated line, for what follows."""
        if self._shown:
            self._stream.write("\r\x1b[K")
            self._stream.flush()


def _print_table(rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=True)]
        print("  ".join(cells).rstrip())


_RUN: dict[str, Callable[[argparse.Namespace], int]] = {
    "probe": probe,
    "watch": watch,
    "list": list_services,
    "smoke": smoke,
}


def main(command: str, argv: Sequence[str]) -> int:
    """Run a client command; every failure is one line on stderr and its exit code."""
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # end a watch cleanly
    try:
        args = build_parser(command).parse_args(argv)
        validate(args)
        if args.addr_file:
            args.addr = address_from_file(args, command)
        if args.v:
            _verbose(args, "parsed options:")
            _verbose(
                args,
                f"> addr={args.addr} conn_timeout="
                f"{format_go_duration(args.connect_timeout)} rpc_timeout="
                f"{format_go_duration(args.rpc_timeout)}",
            )
            _verbose(args, f"> tls={str(args.tls).lower()}")
        return _RUN[command](args)
    except Exit as stop:
        if stop.message:
            print(stop.message, file=sys.stderr)
        return stop.code
    except KeyboardInterrupt:
        print("cancellation received", file=sys.stderr)
        return EXIT_RPC
