"""CheckSpec: what one dependency check is, read from a TOML table, a flag, or code.

This module imports nothing from grpc: the CLI reads it while parsing settings.
"""

from __future__ import annotations

import math
import re
import urllib.parse
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any

from petsage_grpc.values import parse_bool, parse_duration, split_host_port

KINDS = ("tcp", "grpc", "http", "postgres", "redis", "file", "disk", "python")

EXTRAS = {"postgres": ("asyncpg", "postgres"), "redis": ("redis", "redis")}
"""The kinds whose client library is an optional extra: (module, extra)."""

SSLMODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")

PythonCheck = Callable[[], Awaitable[object]]
"""A `python` check: a coroutine function that raises (or returns False) when failing."""

RESERVED_SERVICES = ("liveness", "readiness", "")
"""Service names whose meaning is fixed: a check cannot be scoped to them."""

DEFAULT_EXPECT_STATUS = ((200, 399),)
SECRET_PREFIXES = ("env:", "file:")
"""A header value `env:NAME` is read from the environment variable NAME, `file:PATH` from a file
(a Kubernetes secret volume), once at start-up."""

LIST_SEPARATOR = "|"
"""Separates the items of a list in the `--check` / `PETSAGE_CHECK` form: `services=a.B|c.D`."""


@dataclass(frozen=True)
class CheckSpec:
    """One dependency check. Thresholds count consecutive results, as Kubernetes probes do."""

    name: str
    kind: str
    target: str | PythonCheck
    """tcp: host:port; grpc: a grpc target; http: a URL; file: a path; python: module:function
    or the coroutine function itself."""
    interval: float = 10.0
    timeout: float = 1.0
    failure_threshold: int = 3
    success_threshold: int = 1
    required: bool = True
    service: str = ""
    """grpc only: the grpc.health.v1 service name to watch ("" is the whole server)."""
    services: tuple[str, ...] = ()
    """The hosted services this check applies to; none: every one, and readiness."""
    tls: bool = False
    """grpc only: connect with TLS (http: the URL's scheme says)."""
    tls_ca: str = ""
    """grpc, https: a file of CA certificates to verify the server with (default: the system's)."""
    tls_cert: str = ""
    """grpc, https: a client certificate file (with tls_key), for mTLS."""
    tls_key: str = ""
    tls_server_name: str = ""
    """grpc: the name to verify the server's certificate against (default: the target's host)."""
    headers: tuple[tuple[str, str], ...] = ()
    """http only: extra request headers; a value may be `env:NAME` or `file:PATH`."""
    expect_status: tuple[tuple[int, int], ...] = DEFAULT_EXPECT_STATUS
    """http only: the status codes that pass, as inclusive ranges (default 200-399)."""
    user: str = ""
    """postgres, redis: the user to log in as."""
    password: str = ""
    """postgres, redis: `env:NAME` or `file:PATH` (a Kubernetes secret volume); never in clear."""
    database: str = ""
    """postgres: the database name; redis: the database number."""
    sslmode: str = ""
    """postgres: as libpq's sslmode (disable ... verify-full); tls_ca is its sslrootcert."""
    query: str = "SELECT 1"
    """postgres: the query to run."""
    read_write: bool = False
    """postgres: fail when the server is read-only (a hot standby, or transaction_read_only)."""
    role: str = ""
    """redis: fail unless the server's ROLE is this ("master" or "replica")."""
    min_free: str = ""
    """disk: the least free space that passes: bytes (`500MiB`, `2GB`) or a share (`10%`)."""

    def __post_init__(self) -> None:
        problem = self._problem()
        if problem is not None:
            raise SpecError(*problem)

    def _problem(self) -> tuple[str, str] | None:
        if not self.name:
            return "name", "must not be empty"
        if self.kind not in KINDS:
            return "kind", f"unknown kind {self.kind!r} (one of: {', '.join(KINDS)})"
        if not (math.isfinite(self.interval) and self.interval > 0):
            return "interval", f"must be more than zero, not {self.interval!r}"
        if not (math.isfinite(self.timeout) and self.timeout > 0):
            return "timeout", f"must be more than zero, not {self.timeout!r}"
        for key in ("failure_threshold", "success_threshold"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                return key, f"must be a whole number of at least 1, not {value!r}"
        for service in self.services:
            if service in RESERVED_SERVICES:
                return "services", f"{service!r} cannot be scoped: it follows the unscoped checks"
        return self._kind_problem() or _target_problem(self.kind, self.target)

    def _kind_problem(self) -> tuple[str, str] | None:
        only = {
            "service": ("grpc",),
            "tls": ("grpc", "redis"),
            "tls_server_name": ("grpc",),
            "tls_ca": ("grpc", "http", "postgres", "redis"),
            "tls_cert": ("grpc", "http", "postgres", "redis"),
            "tls_key": ("grpc", "http", "postgres", "redis"),
            "headers": ("http",),
            "user": ("postgres", "redis"),
            "password": ("postgres", "redis"),
            "database": ("postgres", "redis"),
            "sslmode": ("postgres",),
            "read_write": ("postgres",),
            "role": ("redis",),
            "min_free": ("disk",),
        }
        for key, kinds in only.items():
            if getattr(self, key) and self.kind not in kinds:
                return key, f"is only for {', '.join(kinds)} checks"
        if self.expect_status != DEFAULT_EXPECT_STATUS and self.kind != "http":
            return "expect_status", "is only for http checks"
        if self.query != "SELECT 1" and self.kind != "postgres":
            return "query", "is only for postgres checks"
        return self._datastore_problem() or self._tls_problem()

    def _datastore_problem(self) -> tuple[str, str] | None:
        if self.password and not self.password.startswith(SECRET_PREFIXES):
            return "password", "give it as env:VARIABLE or file:PATH, never in clear"
        if self.sslmode and self.sslmode not in SSLMODES:
            return "sslmode", f"must be one of: {', '.join(SSLMODES)}"
        if self.kind == "redis" and self.database and not self.database.isdigit():
            return "database", f"must be a database number, not {self.database!r}"
        if self.role and self.role not in ("master", "replica"):
            return "role", f"must be master or replica, not {self.role!r}"
        if self.kind == "postgres" and not self.query.strip():
            return "query", "must not be empty"
        if self.kind == "disk":
            if not self.min_free:
                return "min_free", "is missing (e.g. 10% or 500MiB)"
            try:
                parse_free_space(self.min_free)
            except ValueError as exc:
                return "min_free", str(exc)
        return None

    def _tls_problem(self) -> tuple[str, str] | None:
        if bool(self.tls_cert) != bool(self.tls_key):
            return "tls_cert", "and tls_key go together: give both or neither"
        uses_tls = self.tls_ca or self.tls_cert or self.tls_server_name
        if self.kind in ("grpc", "redis") and uses_tls and not self.tls:
            return "tls", "must be true for the other tls_ keys to apply"
        if (
            self.kind == "http"
            and uses_tls
            and isinstance(self.target, str)
            and not self.target.startswith("https://")
        ):
            return "tls_ca", "needs an https:// target"
        for name, _ in self.headers:
            if not re.fullmatch(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+", name):
                return "headers", f"{name!r} is not a header name"
        return None

    @property
    def stale_after(self) -> float:
        """A result older than this counts as failing: a stuck check must not keep passing."""
        return 3 * self.interval + self.timeout


class SpecError(ValueError):
    """A check's key has a bad value."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"{key}: {problem}")
        self.key = key


def _target_problem(kind: str, target: object) -> tuple[str, str] | None:
    if kind == "python":
        if callable(target):
            return None
        if not isinstance(target, str) or target.count(":") != 1 or "" in target.split(":"):
            return "target", f"must be module:function, not {target!r}"
        return None
    if not isinstance(target, str) or not target.strip():
        return "target", "must not be empty"
    if kind == "tcp":
        try:
            _, port = split_host_port(target)
        except ValueError:
            port = 0
        if port == 0:
            return "target", f"must be host:port, not {target!r}"
    if kind in ("postgres", "redis") and "://" in target:
        schemes = (
            ("postgresql://", "postgres://") if kind == "postgres" else ("redis://", "rediss://")
        )
        if not target.startswith(schemes):
            return "target", f"must be host:port or a {schemes[0]} URL"
        url = urllib.parse.urlsplit(target)
        if url.password is not None or "password" in urllib.parse.parse_qs(url.query):
            return "target", "must not carry a password: give it as password = env:... or file:..."
        return None
    if kind in ("postgres", "redis"):
        try:
            split_host_port(target)
        except ValueError:
            return "target", f"must be host:port or a URL, not {target!r}"
        return None
    if kind == "http":
        if not target.startswith(("http://", "https://")):
            return "target", "must be an http:// or https:// URL"
        url = urllib.parse.urlsplit(target)
        if "@" in url.netloc:
            return "target", "must not carry a user or password: send them in headers"
        if not url.hostname:
            return "target", "has no host"
    return None


_SIZES = {
    "": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
    "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40,
}  # fmt: skip


def parse_free_space(text: str) -> tuple[str, float]:
    """`10%` as ("percent", 10.0); `500MiB`, `2GB` or `1048576` as ("bytes", the number)."""
    value = text.strip().lower().replace(" ", "")
    if value.endswith("%"):
        number = value[:-1]
        if re.fullmatch(r"[0-9]+(\.[0-9]+)?", number) and 0 < float(number) < 100:
            return "percent", float(number)
        raise ValueError(f"invalid share {text!r} (more than 0% and less than 100%)")
    match = re.fullmatch(r"([0-9]+(?:\.[0-9]+)?)([kmgt]i?b|b)?", value)
    if match is None or float(match[1]) <= 0:
        raise ValueError(f"invalid size {text!r} (e.g. 500MiB, 2GB or 10%)")
    return "bytes", float(match[1]) * _SIZES[match[2] or ""]


def parse_status_ranges(value: object) -> tuple[tuple[int, int], ...]:
    """HTTP status codes that pass: `200`, `"2xx"`, `"200-299"`, or a list of those (a string
    may list them with `|` or `,`)."""
    items: list[object]
    if isinstance(value, list | tuple):
        items = list(value)
    elif isinstance(value, str):
        items = [part for part in re.split(r"[|,]", value) if part.strip()]
    else:
        items = [value]
    ranges = []
    for item in items:
        text = str(item).strip().lower()
        if isinstance(item, bool):
            raise ValueError(f"invalid status {item!r}")
        if re.fullmatch(r"[1-5]xx", text):
            low, high = int(text[0]) * 100, int(text[0]) * 100 + 99
        elif match := re.fullmatch(r"([1-5][0-9][0-9])(?:-([1-5][0-9][0-9]))?", text):
            low = int(match[1])
            high = int(match[2] or match[1])
        else:
            raise ValueError(f"invalid status {item!r} (e.g. 200, 2xx or 200-299)")
        if high < low:
            raise ValueError(f"invalid status range {item!r}")
        ranges.append((low, high))
    if not ranges:
        raise ValueError("no status codes given")
    return tuple(ranges)


def _parse_services(value: object) -> tuple[str, ...]:
    items = value.split(LIST_SEPARATOR) if isinstance(value, str) else value
    if not isinstance(items, list | tuple) or not all(isinstance(i, str) for i in items):
        raise ValueError("must be a list of service names")
    names = tuple(item.strip() for item in items)
    if not all(names):
        raise ValueError("a service name must not be empty")
    return names


def _parse_headers(value: object) -> tuple[tuple[str, str], ...]:
    if not isinstance(value, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise ValueError("must be a table of header names and string values")
    return tuple((name, text) for name, text in value.items())


def _parse_int(value: object) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    raise ValueError(f"must be a whole number, not {value!r}")


def _parse_flag_bool(value: object) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        return parse_bool(value)
    raise ValueError(f"must be true or false, not {value!r}")


def _parse_database(value: object) -> str:
    """A database name (postgres) or number (redis, where TOML may write it as a number)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, str):
        return value
    raise ValueError(f"must be a name or a number, not {value!r}")


def _parse_seconds(value: object) -> float:
    if isinstance(value, bool):
        raise ValueError(f"must be a duration, not {value!r}")
    if isinstance(value, int | float):
        return float(value)
    return parse_duration(str(value))


_FIELDS = {f.name: f for f in fields(CheckSpec)}
_PARSERS: dict[str, Callable[[Any], Any]] = {
    "interval": _parse_seconds,
    "timeout": _parse_seconds,
    "failure_threshold": _parse_int,
    "success_threshold": _parse_int,
    "required": _parse_flag_bool,
    "tls": _parse_flag_bool,
    "read_write": _parse_flag_bool,
    "database": _parse_database,
    "services": _parse_services,
    "headers": _parse_headers,
    "expect_status": parse_status_ranges,
}


def spec_from_mapping(values: Mapping[str, object]) -> CheckSpec:
    """A CheckSpec from a TOML table or parsed flag; strings are parsed where a key wants more.

    Raises SpecError naming the key.
    """
    for key in ("name", "kind", "target"):
        if key not in values:
            raise SpecError(key, "is missing")
    kwargs: dict[str, Any] = {}
    for key, value in values.items():
        if key not in _FIELDS:
            raise SpecError(key, f"unknown key (known: {', '.join(_FIELDS)})")
        parse = _PARSERS.get(key)
        if parse is not None:
            try:
                value = parse(value)
            except (ValueError, TypeError) as exc:
                raise SpecError(key, str(exc)) from None
        elif not isinstance(value, str):
            raise SpecError(key, f"must be a string, not {value!r}")
        kwargs[key] = value
    return CheckSpec(**kwargs)


def parse_check_flag(text: str) -> CheckSpec:
    """A CheckSpec from `name=db,kind=tcp,target=localhost:5432[,key=value...]`.

    Lists are `|`-separated (`services=a.B|c.D`); each header is a `header.NAME=VALUE` pair,
    whose value must be `env:VARIABLE` or `file:PATH`: never a secret in clear on a command line.
    """
    values: dict[str, object] = {}
    headers: dict[str, str] = {}
    for item in text.split(","):
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ValueError(f"invalid check {text!r}: expected key=value pairs, comma-separated")
        if key.lower().startswith("header."):
            name = key[len("header.") :]
            if not value.strip().startswith(SECRET_PREFIXES):
                raise ValueError(
                    f"invalid check: header {name!r}: give the value as env:VARIABLE or "
                    "file:PATH, never in clear"
                )
            headers[name] = value.strip()
            continue
        values[key.replace("-", "_")] = value.strip()
    if headers:
        values["headers"] = headers
    try:
        return spec_from_mapping(values)
    except SpecError as exc:
        raise ValueError(f"invalid check {_shown(text)!r}: {exc}") from None


def _shown(text: str) -> str:
    """A --check value as errors may show it: header values and a URL's user and password
    left out."""
    return ",".join(
        item.partition("=")[0] + "=…"
        if item.strip().lower().startswith("header.")
        else re.sub(r"//[^/@]*@", "//…@", item)
        for item in text.split(",")
    )
