"""Config: every server setting, from defaults, a TOML file, `PETSAGE_*` variables and flags.

A flag wins over its environment variable, which wins over the config file, which wins over the
default. Dependency checks add up instead: those of the file, then `PETSAGE_CHECK`, then `--check`.
Values are parsed and checked here, once, so a bad value is a usage error named after where it came
from. This module imports nothing from grpc: the CLI reads it before grpc is loaded.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from petsage_grpc.checks.spec import CheckSpec, SpecError, parse_check_flag, spec_from_mapping
from petsage_grpc.values import (
    LOG_LEVELS,
    format_address,
    format_seconds,
    parse_bool,
    parse_duration,
    parse_host,
    parse_log_level,
    parse_port,
)

ENV_PREFIX = "PETSAGE_"
CONFIG_ENV = ENV_PREFIX + "CONFIG"
CHECK_ENV_SEPARATOR = ";"


def is_service_link(value: str) -> bool:
    """Whether a variable's value is one Kubernetes injects for a Service (`tcp://10.96.0.12:80`):
    a Service named `petsage` gives every pod of its namespace PETSAGE_PORT=tcp://..., which is
    no setting of ours and is ignored (the manifests also set enableServiceLinks: false)."""
    return value.startswith(("tcp://", "udp://", "sctp://"))


def service_links(environ: Mapping[str, str]) -> list[str]:
    """The PETSAGE_* settings' variables that hold Kubernetes service links, so are ignored."""
    return sorted(
        option.env
        for option in OPTIONS
        if option.env in environ and is_service_link(environ[option.env])
    )


class ConfigError(ValueError):
    """A setting has a value that cannot be used; the message names where it came from."""


MAX_COUNT = 2**30
"""The largest count a setting takes (grpc keeps its limits in 32-bit integers)."""


def parse_count(text: str) -> int:
    """Parse a whole number from 1 to MAX_COUNT."""
    digits = text.strip()
    if not digits.isascii() or not digits.isdigit() or not 1 <= int(digits) <= MAX_COUNT:
        raise ValueError(f"invalid number {text!r} (a whole number from 1 to {MAX_COUNT})")
    return int(digits)


@dataclass(frozen=True)
class Config:
    """All settings of a PetSage server. Construct directly, or with `Config.load`."""

    host: str = "0.0.0.0"
    port: int = 50051
    drain_delay: float = 0.5
    grace_period: float = 10.0
    log_level: str = "info"
    reflection: bool = True
    checks: tuple[CheckSpec, ...] = ()
    services: tuple[str, ...] = ()
    history_size: int = 200
    fresh_run_reuse: float = 1.0
    max_watch_streams: int = 20_000
    watch_send_timeout: float = 30.0
    max_unknown_services: int = 100
    max_service_name_bytes: int = 200
    tls_cert: str = ""
    tls_key: str = ""
    tls_client_ca: str = ""
    tls_reload_interval: float = 10.0
    tls_expiry_warning: float = 7 * 24 * 3600.0
    health_port: int | None = None
    health_host: str = ""
    health_port_max_watch_streams: int = 100
    max_receive_message_bytes: int = 64 * 1024
    max_concurrent_streams: int = 1000
    keepalive_min_ping_interval: float = 10.0
    max_connection_age: float = 30 * 60.0
    max_connection_age_grace: float = 30.0
    admin_port: int | None = None
    admin_host: str = "127.0.0.1"
    log_format: str = "text"
    access_log_health: bool = False
    address_file: str = ""

    def __post_init__(self) -> None:
        if bool(self.tls_cert) != bool(self.tls_key):
            raise ConfigError("--tls-cert and --tls-key go together: give both or neither")
        if self.tls_client_ca and not self.tls_cert:
            raise ConfigError("--tls-client-ca needs --tls-cert and --tls-key")
        if self.tls_reload_interval <= 0:
            raise ConfigError("--tls-reload-interval must be more than zero")
        if self.watch_send_timeout <= 0:
            raise ConfigError("--watch-send-timeout must be more than zero")

    @property
    def tls(self) -> bool:
        """Whether the main port speaks TLS."""
        return bool(self.tls_cert)

    @property
    def address(self) -> str:
        """The address to bind, as grpc spells it (IPv6 literals in brackets)."""
        return format_address(self.host, self.port)

    @classmethod
    def load(cls, flags: Mapping[str, Any], environ: Mapping[str, str]) -> Config:
        """Build a Config from parsed flags (None where not given), the environment, and the
        TOML file named by `flags["config"]` or PETSAGE_CONFIG.

        Raises ConfigError naming the file and key, or the variable, whose value is bad.
        """
        path = flags.get("config") or environ.get(CONFIG_ENV)
        values = _read_file(path) if path else {}
        for option in OPTIONS:
            if option.repeat:  # the file's, then the variable's, then the flags' add up
                raw = environ.get(option.env, "")
                values[option.field] = (
                    *values.get(option.field, ()),
                    *(_parse(option, v, option.env) for v in raw.split(option.repeat) if v.strip()),
                    *(flags.get(option.field) or ()),
                )
            elif flags.get(option.field) is not None:
                values[option.field] = flags[option.field]
            elif option.env in environ and not is_service_link(environ[option.env]):
                values[option.field] = _parse(option, environ[option.env], option.env)
        names = [check.name for check in values["checks"]]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ConfigError(f"checks: more than one check is named {duplicates[0]!r}")
        return cls(**values)


@dataclass(frozen=True)
class Option:
    """How one Config field is spelled on the command line, in the environment and in TOML."""

    field: str
    parse: Callable[[str], Any]
    help: str
    metavar: str | None = None  # None: a boolean --NAME / --no-NAME pair
    show: Callable[[Any], str] = str  # how help text shows the default
    repeat: str = ""  # a flag given once per value; its variable separates values with this
    flag_name: str | None = None

    @property
    def flag(self) -> str:
        return "--" + (self.flag_name or self.field).replace("_", "-")

    @property
    def env(self) -> str:
        return ENV_PREFIX + (self.flag_name or self.field).upper()


def _show_bool(value: bool) -> str:
    return "on" if value else "off"


def _show_checks(items: Sequence[object]) -> str:
    return "none"


def parse_service_name(text: str) -> str:
    """Parse a gRPC service name to declare in health: not one of the reserved names."""
    name = text.strip()
    if name in ("", "liveness", "readiness") or any(c.isspace() for c in name):
        raise ValueError(f'invalid service name {text!r} (liveness, readiness and "" are fixed)')
    return name


def parse_log_format(text: str) -> str:
    """Parse a log format: text or json."""
    value = text.strip().lower()
    if value not in ("text", "json"):
        raise ValueError(f"invalid log format {text!r} (text or json)")
    return value


def parse_path(text: str) -> str:
    """Parse a file path (it is read later, where a missing file is a run-time failure)."""
    if not text.strip():
        raise ValueError("invalid path '' (empty)")
    return text


def parse_optional_port(text: str) -> int | None:
    """Parse a port, or `off` (or nothing) for none."""
    return None if text.strip().lower() in ("", "off") else parse_port(text)


def _show_optional(value: object) -> str:
    return "off" if value in (None, "") else str(value)


OPTIONS: tuple[Option, ...] = (
    Option("host", parse_host, "address or name to listen on", "HOST"),
    Option("port", parse_port, "port to listen on; 0 picks a free one", "PORT"),
    Option(
        "drain_delay",
        parse_duration,
        "after a stop signal, how long to keep serving as NOT_SERVING so load balancers notice",
        "DURATION",
        show=format_seconds,
    ),
    Option(
        "grace_period",
        parse_duration,
        "after the drain delay, how long in-flight RPCs may take to finish",
        "DURATION",
        show=format_seconds,
    ),
    Option("log_level", parse_log_level, "one of: " + ", ".join(LOG_LEVELS), "LEVEL"),
    Option("reflection", parse_bool, "serve gRPC server reflection", show=_show_bool),
    Option(
        "checks",
        parse_check_flag,
        "a dependency check, as name=N,kind=K,target=T[,interval=10s,timeout=1s,"
        "failure_threshold=3,success_threshold=1,required=true,service=S]; repeatable",
        "SPEC",
        show=_show_checks,
        repeat=CHECK_ENV_SEPARATOR,
        flag_name="check",
    ),
    Option(
        "services",
        parse_service_name,
        "a gRPC service name to answer health for, beside the hosted ones (as a sidecar does);"
        " it follows readiness and the checks scoped to it; repeatable",
        "NAME",
        show=_show_checks,
        repeat=",",
        flag_name="service",
    ),
    Option(
        "history_size",
        parse_count,
        "transitions of services and checks kept for the status page and SmokeTest",
        "N",
    ),
    Option(
        "fresh_run_reuse",
        parse_duration,
        "a fresh run of the checks (SmokeTest run_checks) reuses results younger than this",
        "DURATION",
        show=format_seconds,
    ),
    Option(
        "max_watch_streams",
        parse_count,
        "Watch streams open at once; more are refused with RESOURCE_EXHAUSTED",
        "N",
    ),
    Option(
        "watch_send_timeout",
        parse_duration,
        "a Watch stream whose client takes no message for this long is cancelled (it re-Watches)",
        "DURATION",
        show=format_seconds,
    ),
    Option(
        "max_unknown_services",
        parse_count,
        "distinct unregistered service names that open Watch streams may wait for",
        "N",
    ),
    Option(
        "max_service_name_bytes",
        parse_count,
        "longest service name Check and Watch accept; longer is INVALID_ARGUMENT",
        "N",
    ),
    Option(
        "tls_cert",
        parse_path,
        "serve TLS with this certificate chain (PEM)",
        "FILE",
        show=_show_optional,
    ),
    Option(
        "tls_key", parse_path, "the private key of --tls-cert (PEM)", "FILE", show=_show_optional
    ),
    Option(
        "tls_client_ca",
        parse_path,
        "require client certificates signed by these CAs (mTLS)",
        "FILE",
        show=_show_optional,
    ),
    Option(
        "tls_reload_interval",
        parse_duration,
        "how often the TLS files are looked at; changed files are served without a restart",
        "DURATION",
        show=format_seconds,
    ),
    Option(
        "tls_expiry_warning",
        parse_duration,
        "SmokeTest says DEGRADED once the served certificate expires within this",
        "DURATION",
        show=format_seconds,
    ),
    Option(
        "health_port",
        parse_optional_port,
        "an extra plaintext port serving only grpc.health.v1 (for kubelet probes)",
        "PORT",
        show=_show_optional,
    ),
    Option(
        "health_host",
        parse_host,
        "address to listen on for --health-port (default: --host)",
        "HOST",
        show=_show_optional,
    ),
    Option(
        "health_port_max_watch_streams",
        parse_count,
        "Watch streams open at once on --health-port (kept apart from --max-watch-streams)",
        "N",
    ),
    Option(
        "max_receive_message_bytes",
        parse_count,
        "largest request message; larger is RESOURCE_EXHAUSTED",
        "N",
    ),
    Option(
        "max_concurrent_streams",
        parse_count,
        "RPCs open at once on one connection; more wait for a free slot",
        "N",
    ),
    Option(
        "keepalive_min_ping_interval",
        parse_duration,
        "clients that ping more often than this are sent GOAWAY (too_many_pings)",
        "DURATION",
        show=format_seconds,
    ),
    Option(
        "max_connection_age",
        parse_duration,
        "connections older than this are asked to reconnect (GOAWAY); 0 for never",
        "DURATION",
        show=format_seconds,
    ),
    Option(
        "max_connection_age_grace",
        parse_duration,
        "after --max-connection-age, how long RPCs on the old connection may go on",
        "DURATION",
        show=format_seconds,
    ),
    Option(
        "admin_port",
        parse_optional_port,
        "an HTTP port for /metrics, /healthz, /readyz and the /api/v1 endpoints",
        "PORT",
        show=_show_optional,
    ),
    Option("admin_host", parse_host, "address to listen on for --admin-port", "HOST"),
    Option("log_format", parse_log_format, "text or json (one JSON object per line)", "FORMAT"),
    Option(
        "access_log_health",
        parse_bool,
        "log every grpc.health.v1 RPC too (other RPCs are always logged)",
        show=_show_bool,
    ),
    Option(
        "address_file",
        parse_path,
        "once serving, write the addresses the server listens on to this file (JSON), for"
        " probe -addr-file; removed on exit",
        "FILE",
        show=_show_optional,
    ),
)


def _parse(option: Option, raw: str, where: str) -> Any:
    try:
        return option.parse(raw)
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def _read_file(path: str) -> dict[str, Any]:
    """The settings of a TOML file: the options' fields at the top, and `[[check]]` tables."""
    import tomllib  # here: most servers are configured without a file

    try:
        with open(path, "rb") as file:
            document = tomllib.load(file)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    by_field = {o.field: o for o in OPTIONS if not o.repeat}
    lists = {o.field: o for o in OPTIONS if o.repeat and o.field != "checks"}
    values: dict[str, Any] = {}
    for key, value in document.items():
        if key == "check":
            values["checks"] = _file_checks(path, value)
        elif key in lists:  # a repeatable setting: a list of what its flag takes once
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ConfigError(f"{path}: {key}: must be a list of strings")
            values[key] = tuple(_parse(lists[key], item, f"{path}: {key}") for item in value)
        elif key in by_field:
            if isinstance(value, dict | list):
                raise ConfigError(f"{path}: {key}: must be a single value")
            text = str(value).lower() if isinstance(value, bool) else str(value)
            values[key] = _parse(by_field[key], text, f"{path}: {key}")
        else:
            known = ", ".join(["check", *lists, *by_field])
            raise ConfigError(f"{path}: {key}: unknown key (known: {known})")
    return values


def _file_checks(path: str, tables: object) -> list[CheckSpec]:
    if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
        raise ConfigError(f"{path}: check: must be [[check]] tables")
    checks = []
    for number, table in enumerate(tables, start=1):
        try:
            checks.append(spec_from_mapping(table))
        except SpecError as exc:
            name = table.get("name")
            label = f"[[check]] #{number}" + (f" {name!r}" if isinstance(name, str) else "")
            raise ConfigError(f"{path}: {label}: {exc}") from None
    return checks
