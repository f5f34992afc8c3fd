"""Config: every server setting, from defaults, `PETSAGE_*` environment variables and flags.

A flag wins over its environment variable, which wins over the default. Values are parsed and
checked here, once, so a bad value is a usage error named after where it came from. This module
imports nothing from grpc: the CLI reads it before grpc is loaded.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

ENV_PREFIX = "PETSAGE_"
LOG_LEVELS = ("debug", "info", "warning", "error")


class ConfigError(ValueError):
    """A setting has a value that cannot be used; the message names the setting."""


_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
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
    try:
        seconds = float(value)
    except ValueError:
        parts = _DURATION_PART.findall(value)
        if not parts or "".join(number + unit for number, unit in parts) != value:
            raise ValueError(
                f"invalid duration {text!r} (use seconds, or e.g. 250ms, 1m30s)"
            ) from None
        seconds = sum(float(number) * _UNIT_SECONDS[unit] for number, unit in parts)
    if not seconds >= 0 or seconds == float("inf"):
        raise ValueError(f"invalid duration {text!r} (must be zero or more)")
    return seconds


def parse_port(text: str) -> int:
    """Parse a TCP port, 0 to 65535 (0 asks the system for a free port)."""
    try:
        port = int(text.strip())
    except ValueError:
        raise ValueError(f"invalid port {text!r} (a number from 0 to 65535)") from None
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


def format_address(host: str, port: int) -> str:
    """`host:port`, with an IPv6 literal in brackets: `[::1]:50051`."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@dataclass(frozen=True)
class Option:
    """How one Config field is spelled on the command line and in the environment."""

    field: str
    parse: Callable[[str], Any]
    help: str
    metavar: str | None = None  # None: a boolean --NAME / --no-NAME pair
    show: Callable[[Any], str] = str  # how help text shows the default

    @property
    def flag(self) -> str:
        return "--" + self.field.replace("_", "-")

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.field.upper()


@dataclass(frozen=True)
class Config:
    """All settings of a PetSage server. Construct directly, or with `Config.load`."""

    host: str = "0.0.0.0"
    port: int = 50051
    drain_delay: float = 0.0
    grace_period: float = 10.0
    log_level: str = "info"
    reflection: bool = True

    @property
    def address(self) -> str:
        """The address to bind, as grpc spells it (IPv6 literals in brackets)."""
        return format_address(self.host, self.port)

    @classmethod
    def load(cls, flags: Mapping[str, Any], environ: Mapping[str, str]) -> Config:
        """Build a Config from parsed flags (None where not given) and the environment.

        Raises ConfigError naming the environment variable whose value is bad.
        """
        values: dict[str, Any] = {}
        for option in OPTIONS:
            flag_value = flags.get(option.field)
            if flag_value is not None:
                values[option.field] = flag_value
            elif option.env in environ:
                raw = environ[option.env]
                try:
                    values[option.field] = option.parse(raw)
                except ValueError as exc:
                    raise ConfigError(f"{option.env}: {exc}") from None
        return cls(**values)


def _show_duration(seconds: float) -> str:
    return f"{seconds:g}s"


def _show_bool(value: bool) -> str:
    return "on" if value else "off"


OPTIONS: tuple[Option, ...] = (
    Option("host", parse_host, "address or name to listen on", "HOST"),
    Option("port", parse_port, "port to listen on; 0 picks a free one", "PORT"),
    Option(
        "drain_delay",
        parse_duration,
        "after a stop signal, how long to keep serving as NOT_SERVING so load balancers notice",
        "DURATION",
        show=_show_duration,
    ),
    Option(
        "grace_period",
        parse_duration,
        "after the drain delay, how long in-flight RPCs may take to finish",
        "DURATION",
        show=_show_duration,
    ),
    Option("log_level", parse_log_level, "one of: " + ", ".join(LOG_LEVELS), "LEVEL"),
    Option("reflection", parse_bool, "serve gRPC server reflection", show=_show_bool),
)
