"""What the client commands do exactly as grpc_health_probe does: its flags, spelled as Go's flag
package spells them (one or two dashes, `-flag value` or `-flag=value`), Go durations (`1s`,
`250ms`), its argument checks and their messages, its exit codes, grpc-go's way of printing an
RPC error, and `-tls-no-verify`, which grpc Python cannot do directly.

Exit codes: 0 success (SERVING; for smoke, OK) · 1 invalid arguments · 2 connection failure ·
3 RPC failure · 4 not SERVING (for smoke, FAILING) · 5 smoke only: DEGRADED ·
6 smoke -each only: an endpoint on another version than -expect-version ·
7 smoke -each only: fewer endpoints than -min-endpoints
"""

from __future__ import annotations

import argparse
from typing import Any, NoReturn

import grpc

from petsage_grpc import __version__
from petsage_grpc.values import argument_type, parse_duration, split_host_port

EXIT_OK, EXIT_ARGS, EXIT_CONNECT, EXIT_RPC, EXIT_UNHEALTHY, EXIT_DEGRADED = 0, 1, 2, 3, 4, 5
EXIT_VERSION, EXIT_TOO_FEW = 6, 7


class Exit(Exception):
    """Stop the command: print `message` (if any) to stderr and exit with `code`."""

    def __init__(self, code: int, message: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def parse_go_duration(text: str) -> float:
    """Seconds from a Go duration (`1s`, `250ms`, `1m30s`) or a plain number of seconds."""
    return parse_duration(text)


def format_go_duration(seconds: float) -> str:
    """A duration as Go's time.Duration prints it: `1s`, `250ms`, `1.5s`, `2m0s`."""
    if seconds == 0:
        return "0s"
    if seconds < 1:
        for unit, size in (("ms", 1e-3), ("µs", 1e-6)):
            if seconds >= size:
                return f"{seconds / size:.6g}{unit}"
        return f"{seconds * 1e9:.0f}ns"
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    text = f"{secs:.9f}".rstrip("0").rstrip(".") + "s"
    if hours:
        return f"{int(hours)}h{int(minutes)}m{text}"
    if minutes:
        return f"{int(minutes)}m{text}"
    return text


def _positive_int(text: str) -> int:
    value = text.strip()
    if not value.isascii() or not value.isdigit() or int(value) < 1:
        raise ValueError(f"invalid count {text!r} (a whole number from 1)")
    return int(value)


def _go_bool(text: str) -> bool:
    value = text.lower()
    if value in ("1", "t", "true"):
        return True
    if value in ("0", "f", "false"):
        return False
    raise ValueError(f"invalid boolean value {text!r}")


class GoFlagParser(argparse.ArgumentParser):
    """argparse taught Go's flag spelling; a bad flag is exit code 1, as grpc_health_probe."""

    def error(self, message: str) -> NoReturn:
        raise Exit(EXIT_ARGS, f"error: {message}")


def flag(parser: argparse.ArgumentParser, name: str, **kwargs: Any) -> None:
    if kwargs.pop("boolean", False):
        kwargs.update(nargs="?", const=True, default=False, type=argument_type(_go_bool))
    parser.add_argument(f"-{name}", f"--{name}", dest=name.replace("-", "_"), **kwargs)


def build_parser(command: str) -> argparse.ArgumentParser:
    descriptions = {
        "probe": "Check one service's health, as grpc_health_probe does.",
        "watch": "Stream a service's status changes, one line each, until interrupted.",
        "list": "Print every service the server reports and its status (the List RPC).",
        "smoke": "Run SmokeTest and print its report; exit 0 only when the status is OK. With "
        "-each, run it on every endpoint -addr resolves to (dns:///name:port, ipv4:a:port,b:port, "
        "host:port,host:port) and exit 0 only when each is OK.",
    }
    parser = GoFlagParser(
        prog=f"petsage-grpc {command}",
        description=descriptions[command],
        allow_abbrev=False,
        epilog="exit codes: 0 success, 1 invalid arguments, 2 connection failure, "
        "3 RPC failure, 4 not SERVING (smoke: FAILING), 5 smoke: DEGRADED"
        + (
            ", 6 smoke -each: an endpoint on another version than -expect-version, "
            "7 smoke -each: fewer endpoints than -min-endpoints"
            if command == "smoke"
            else ""
        ),
    )
    flag(parser, "addr", default="", metavar="HOST:PORT", help="(required) address to connect to")
    flag(
        parser,
        "addr-file",
        default="",
        metavar="FILE",
        help="instead of -addr: the address that `serve --address-file FILE` wrote (its health-only"
        " port if it has one and -tls is not given, else its main port)",
    )
    if command in ("probe", "watch"):
        flag(parser, "service", default="", help='service name to check (default: "")')
    duration = argument_type(parse_go_duration)
    flag(
        parser,
        "connect-timeout",
        type=duration,
        default=1.0,
        metavar="DURATION",
        help="timeout for establishing the connection (default 1s)",
    )
    rpc_help = {
        "watch": "timeout for the first status (default 1s); later ones may take any time",
        "smoke": "timeout for the SmokeTest RPC (default 10s)",
    }.get(command, "timeout for the RPC (default 1s)")
    flag(
        parser,
        "rpc-timeout",
        type=duration,
        default=10.0 if command == "smoke" else 1.0,
        metavar="DURATION",
        help=rpc_help,
    )
    flag(parser, "user-agent", default="grpc_health_probe", help="user-agent of the RPCs")
    flag(
        parser,
        "rpc-header",
        action="append",
        default=[],
        metavar="'NAME: VALUE'",
        help="additional RPC header; repeatable",
    )
    flag(parser, "gzip", boolean=True, help="compress requests with gzip")
    flag(parser, "v", boolean=True, help="verbose logs")
    flag(parser, "tls", boolean=True, help="use TLS (default: plaintext)")
    flag(
        parser,
        "tls-no-verify",
        boolean=True,
        help="(with -tls) do not verify the server's certificate (INSECURE)",
    )
    flag(
        parser,
        "tls-ca-cert",
        default="",
        metavar="FILE",
        help="(with -tls) trusted certificates for verifying the server",
    )
    flag(
        parser,
        "tls-client-cert",
        default="",
        metavar="FILE",
        help="(with -tls) client certificate (requires -tls-client-key)",
    )
    flag(
        parser,
        "tls-client-key",
        default="",
        metavar="FILE",
        help="(with -tls) client private key (requires -tls-client-cert)",
    )
    flag(
        parser,
        "tls-server-name",
        default="",
        help="(with -tls) the name to verify the server's certificate against",
    )
    if command == "smoke":
        flag(parser, "deep", boolean=True, help="run every dependency check now")
        flag(parser, "json", boolean=True, help="print the response as JSON")
        flag(
            parser,
            "each",
            boolean=True,
            help="call every endpoint -addr resolves to, each on its own connection",
        )
        flag(
            parser,
            "expect-version",
            metavar="VERSION",
            help="(with -each) an endpoint on another version fails the run (exit 6)",
        )
        flag(
            parser,
            "expect-own-version",
            boolean=True,
            help="(with -each) expect the version of this petsage-grpc, as a Job run from the "
            "image being rolled out does",
        )
        flag(
            parser,
            "min-endpoints",
            type=argument_type(_positive_int),
            metavar="N",
            help="(with -each) fewer endpoints than N fail the run (exit 7; default 1)",
        )
        flag(
            parser,
            "wait",
            type=duration,
            metavar="DURATION",
            help="(with -each) try again until every endpoint is OK, or DURATION passes",
        )
        flag(
            parser,
            "concurrency",
            type=argument_type(_positive_int),
            metavar="N",
            help="(with -each) endpoints called at once (default 16)",
        )
    return parser


EACH_DEFAULTS = {"expect_version": None, "min_endpoints": 1, "wait": 0.0, "concurrency": 16}
"""The -each flags and their defaults; given without -each, each is an error."""


def validate(args: argparse.Namespace) -> None:
    """grpc_health_probe's argument checks, with its messages."""
    problems = [
        (not args.addr and not args.addr_file, "-addr not specified"),
        (bool(args.addr and args.addr_file), "specify -addr or -addr-file, not both"),
        (
            args.connect_timeout <= 0,
            "-connect-timeout must be greater than zero (specified: "
            f"{format_go_duration(args.connect_timeout)})",
        ),
        (
            args.rpc_timeout <= 0,
            "-rpc-timeout must be greater than zero (specified: "
            f"{format_go_duration(args.rpc_timeout)})",
        ),
        (not args.tls and args.tls_no_verify, "specified -tls-no-verify without specifying -tls"),
        (not args.tls and args.tls_ca_cert, "specified -tls-ca-cert without specifying -tls"),
        (
            not args.tls and args.tls_client_cert,
            "specified -tls-client-cert without specifying -tls",
        ),
        (
            not args.tls and args.tls_server_name,
            "specified -tls-server-name without specifying -tls",
        ),
        (
            args.tls_client_cert and not args.tls_client_key,
            "specified -tls-client-cert without specifying -tls-client-key",
        ),
        (
            args.tls_client_key and not args.tls_client_cert,
            "specified -tls-client-key without specifying -tls-client-cert",
        ),
        (
            args.tls_no_verify and args.tls_ca_cert,
            "cannot specify -tls-ca-cert with -tls-no-verify (CA cert would not be used)",
        ),
        (
            args.tls_no_verify and args.tls_server_name,
            "cannot specify -tls-server-name with -tls-no-verify (server name would not be used)",
        ),
    ]
    for bad, message in problems:
        if bad:
            raise Exit(EXIT_ARGS, f"error: {message}")
    for header in args.rpc_header:
        name, sep, _ = header.partition(":")
        if not sep or not name.strip():
            raise Exit(EXIT_ARGS, f"error: invalid RPC header {header!r} (want 'name: value')")
    if hasattr(args, "each"):
        _validate_each(args)


def _validate_each(args: argparse.Namespace) -> None:
    """The -each flags: only with -each, and filled in with their defaults."""
    for name, default in EACH_DEFAULTS.items():
        given = getattr(args, name)
        spelled = "-" + name.replace("_", "-")
        if given is not None and not args.each:
            raise Exit(EXIT_ARGS, f"error: specified {spelled} without specifying -each")
        setattr(args, name, default if given is None else given)
    if args.expect_version is not None and not args.expect_version.strip():
        raise Exit(EXIT_ARGS, "error: -expect-version is empty")
    if args.expect_own_version:
        if not args.each:
            raise Exit(EXIT_ARGS, "error: specified -expect-own-version without specifying -each")
        if args.expect_version is not None:
            raise Exit(
                EXIT_ARGS, "error: cannot specify both -expect-version and -expect-own-version"
            )
        args.expect_version = __version__


def no_verify_roots(addr: str, timeout: float) -> tuple[bytes, str]:
    """For -tls-no-verify: trust whatever certificate the server presents.

    grpc Python cannot turn verification off, so the server's own certificate, fetched without
    verifying it, becomes the trusted root, and a name it carries the name to expect.
    """
    import socket
    import ssl

    host, port = split_host_port(addr)

    def handshake(context: ssl.SSLContext) -> ssl.SSLSocket:
        sock = socket.create_connection((host, port), timeout=timeout)
        return context.wrap_socket(sock, server_hostname=host)

    try:
        blind = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        blind.check_hostname = False
        blind.verify_mode = ssl.CERT_NONE
        with handshake(blind) as tls:
            der = tls.getpeercert(binary_form=True)
        if der is None:
            raise ValueError("the server presented no certificate")
        pem = ssl.DER_cert_to_PEM_cert(der)
        # Trust that certificate alone, once more, to have ssl decode the names it carries.
        pinned = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        pinned.check_hostname = False
        pinned.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
        pinned.load_verify_locations(cadata=pem)
        with handshake(pinned) as tls:
            decoded: dict[str, Any] = dict(tls.getpeercert() or {})
    except (OSError, ValueError) as exc:
        raise Exit(EXIT_CONNECT, f"error: failed to connect service at {addr!r}: {exc}") from None
    names = [value for kind, value in decoded.get("subjectAltName", ()) if kind == "DNS"]
    names += [v for rdn in decoded.get("subject", ()) for k, v in rdn if k == "commonName"]
    return pem.encode(), names[0] if names else host


def go_status(error: grpc.RpcError) -> str:
    """An RPC error as grpc-go prints one: `rpc error: code = NotFound desc = ...`."""
    name = "".join(part.title() for part in error.code().name.split("_"))
    return f"rpc error: code = {name} desc = {error.details()}"


def go_quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
