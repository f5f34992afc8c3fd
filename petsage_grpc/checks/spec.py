"""CheckSpec: what one dependency check is, read from a TOML table, a flag, or code.

This module imports nothing from grpc: the CLI reads it while parsing settings.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any

from petsage_grpc.values import parse_bool, parse_duration, split_host_port

KINDS = ("tcp", "grpc", "http", "file", "python")

PythonCheck = Callable[[], Awaitable[object]]
"""A `python` check: a coroutine function that raises (or returns False) when failing."""


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
    """grpc only: the grpc.health.v1 service name to Check ("" is the whole server)."""

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
        if self.service and self.kind != "grpc":
            return "service", "is only for grpc checks"
        return _target_problem(self.kind, self.target)

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
    if kind == "http" and not target.startswith(("http://", "https://")):
        return "target", f"must be an http:// or https:// URL, not {target!r}"
    return None


_FIELDS = {f.name: f for f in fields(CheckSpec)}
_PARSERS: dict[str, Callable[[str], Any]] = {
    "interval": parse_duration,
    "timeout": parse_duration,
    "failure_threshold": int,
    "success_threshold": int,
    "required": parse_bool,
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
        if parse is not None and isinstance(value, str):
            try:
                value = parse(value)
            except ValueError as exc:
                raise SpecError(key, str(exc)) from None
        elif key in ("interval", "timeout") and isinstance(value, int | float):
            value = float(value)
        expected = bool if key == "required" else str if parse is None else None
        if expected is not None and not isinstance(value, expected):
            raise SpecError(key, f"must be a {expected.__name__}, not {value!r}")
        kwargs[key] = value
    return CheckSpec(**kwargs)


def parse_check_flag(text: str) -> CheckSpec:
    """A CheckSpec from `name=db,kind=tcp,target=localhost:5432[,key=value...]`."""
    values: dict[str, str] = {}
    for item in text.split(","):
        key, sep, value = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise ValueError(f"invalid check {text!r}: expected key=value pairs, comma-separated")
        values[key] = value.strip()
    try:
        return spec_from_mapping(values)
    except SpecError as exc:
        raise ValueError(f"invalid check {text!r}: {exc}") from None
