"""Values as people write and read them: parsing of settings (durations, ports, hosts, levels,
booleans, `host:port`), shared by the server's settings, the dependency checks and the client
commands, and the few ways values are shown back (seconds, addresses, "(and N more)").
Each parser raises ValueError with a message fit for a user.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

LOG_LEVELS = ("debug", "info", "warning", "error")

_NUMBER = re.compile(r"[0-9]+(?:\.[0-9]*)?|\.[0-9]+")
_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]*)?|\.[0-9]+)(ns|us|µs|ms|s|m|h)")
_UNIT_SECONDS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}


def parse_duration(text: str) -> float:
    """Parse a duration in seconds: `10`, `2.5`, or Go syntax such as `250ms`, `1m30s`."""
    value = text.strip()
    if _NUMBER.fullmatch(value):
        return float(value)
    parts = _DURATION_PART.findall(value)
    if not parts or "".join(number + unit for number, unit in parts) != value:
        raise ValueError(f"invalid duration {text!r} (use seconds, or e.g. 250ms, 1m30s)")
    return sum(float(number) * _UNIT_SECONDS[unit] for number, unit in parts)


def parse_port(text: str) -> int:
    """Parse a TCP port, 0 to 65535 (0 asks the system for a free port)."""
    digits = text.strip()
    if not digits.isascii() or not digits.isdigit():
        raise ValueError(f"invalid port {text!r} (a number from 0 to 65535)")
    port = int(digits)
    if not 0 <= port <= 65535:
        raise ValueError(f"invalid port {text!r} (a number from 0 to 65535)")
    return port


def parse_host(text: str) -> str:
    """Parse a host to listen on: a name or an address, `[::]` style brackets allowed."""
    host = text.strip()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not host or any(c.isspace() or c in "/[]" for c in host):
        raise ValueError(f"invalid host {text!r}")
    return host


def parse_log_level(text: str) -> str:
    """Parse a log level name, case-insensitive."""
    level = text.strip().lower()
    if level not in LOG_LEVELS:
        raise ValueError(f"invalid log level {text!r} (one of: {', '.join(LOG_LEVELS)})")
    return level


def parse_bool(text: str) -> bool:
    """Parse a boolean environment value: true/false, 1/0, yes/no, on/off."""
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"invalid boolean {text!r} (true or false)")


def split_host_port(address: str) -> tuple[str, int]:
    """`host:port` as (host, port): an IPv6 literal loses its brackets (`[::1]:80` is `::1`)."""
    host, sep, port = address.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not host or not port.isascii() or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"invalid address {address!r} (want host:port)")
    return host, int(port)


def format_seconds(seconds: float) -> str:
    """A number of seconds as settings are shown: `10s`, `0.5s`, `1e-06s`."""
    return f"{seconds:g}s"


def first_and_more(items: Sequence[str]) -> str:
    """The first of `items`, and how many more there are: `x (and 2 more)`."""
    more = f" (and {len(items) - 1} more)" if len(items) > 1 else ""
    return f"{items[0]}{more}" if items else ""


def format_address(host: str, port: int) -> str:
    """`host:port`, with an IPv6 literal in brackets: `[::1]:50051`."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def argument_type(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """`parse` as an argparse type: its ValueError message becomes argparse's error."""
    import argparse  # here: the server, when embedded, has no command line to parse

    def convert(text: str) -> Any:
        try:
            return parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return convert
