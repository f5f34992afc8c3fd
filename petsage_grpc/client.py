"""Channels from other services to PetSage backends, as a rollout needs them.

    from petsage_grpc.client import channel
    with channel(["10.0.0.5:50051", "10.0.0.6:50051"]) as backends:
        stub = SmokeServiceStub(backends)

The channel spreads calls over every backend (`round_robin`) and does client-side health checking:
it opens a `grpc.health.v1` Watch of `health_service` on each connection and sends calls only to
backends that answer SERVING, so a backend that drains (NOT_SERVING during its drain delay) stops
getting calls before it stops listening. Calls that fail UNAVAILABLE (the backend went away before
taking the call) are retried on another backend, and every call gets a deadline unless it sets one.

After a rollout, `smoke_each()` calls SmokeTest on every endpoint a target resolves to, each on
its own channel, instead of on whichever one a load balancer picks:

    from petsage_grpc.client import smoke_each
    results = smoke_each("dns:///petsage-grpc-headless:50051")
    assert results and all(result.ok(version="1.4.0") for result in results), results
"""

from __future__ import annotations

import ipaddress
import json
import re
import socket
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

import grpc

from petsage_grpc._gen.petsage.v1 import smoke_pb2, smoke_pb2_grpc
from petsage_grpc.values import format_address, format_seconds, split_host_port

DEFAULT_HEALTH_SERVICE = "readiness"
DEFAULT_TIMEOUT = 10.0


def service_config(
    health_service: str = DEFAULT_HEALTH_SERVICE,
    timeout: float = DEFAULT_TIMEOUT,
    max_attempts: int = 3,
) -> dict[str, Any]:
    """The gRPC service config: round robin, health checking, retries, a default deadline."""
    return {
        "loadBalancingConfig": [{"round_robin": {}}],
        "healthCheckConfig": {"serviceName": health_service},
        "methodConfig": [
            {
                "name": [{}],  # every method
                "timeout": _duration(timeout),
                "retryPolicy": {
                    "maxAttempts": max_attempts,
                    "initialBackoff": "0.05s",
                    "maxBackoff": "1s",
                    "backoffMultiplier": 2,
                    "retryableStatusCodes": ["UNAVAILABLE"],
                },
            }
        ],
    }


def _duration(seconds: float) -> str:
    """A google.protobuf.Duration in JSON: decimal seconds, at most nine fraction digits."""
    if not 0 < seconds < 315_576_000_000:
        raise ValueError(f"timeout {seconds!r} out of range")
    return f"{seconds:.9f}".rstrip("0").rstrip(".") + "s"


def target(backends: str | Sequence[str]) -> str:
    """A gRPC target naming every backend.

    A string is taken as it is (`dns:///petsage.default.svc:50051`, `ipv4:...`); a list of
    `host:port` of IP addresses becomes one `ipv4:` or `ipv6:` target.
    """
    if isinstance(backends, str):
        return backends
    if not backends:
        raise ValueError("no backends")
    families = set()
    for backend in backends:
        try:
            host, _ = split_host_port(backend)
        except ValueError:
            raise ValueError(f"{backend!r}: no port") from None
        try:
            families.add(ipaddress.ip_address(host).version)
        except ValueError:
            raise ValueError(
                f"{backend!r}: list backends by IP address, or give one target such as "
                "'dns:///petsage:50051'"
            ) from None
    if len(families) > 1:
        raise ValueError("IPv4 and IPv6 backends cannot share one target")
    return f"ipv{families.pop()}:" + ",".join(backends)


def channel_options(
    health_service: str = DEFAULT_HEALTH_SERVICE,
    timeout: float = DEFAULT_TIMEOUT,
    max_attempts: int = 3,
) -> list[tuple[str, Any]]:
    """Channel options carrying the service config; pass them to any grpc channel factory."""
    config = service_config(health_service, timeout, max_attempts)
    return [("grpc.service_config", json.dumps(config)), ("grpc.enable_retries", 1)]


def channel(
    backends: str | Sequence[str],
    *,
    credentials: grpc.ChannelCredentials | None = None,
    health_service: str = DEFAULT_HEALTH_SERVICE,
    timeout: float = DEFAULT_TIMEOUT,
    max_attempts: int = 3,
    options: Sequence[tuple[str, Any]] = (),
    aio: bool = False,
) -> Any:
    """A grpc channel (a grpc.aio one with `aio=True`) to the backends; see the module docstring."""
    every = [*channel_options(health_service, timeout, max_attempts), *options]
    address = target(backends)
    if aio:
        if credentials is None:
            return grpc.aio.insecure_channel(address, options=every)
        return grpc.aio.secure_channel(address, credentials, options=every)
    if credentials is None:
        return grpc.insecure_channel(address, options=every)
    return grpc.secure_channel(address, credentials, options=every)


# --- every endpoint of a target, each smoke-tested on its own ----------------------------------

DEFAULT_PORT = 443
"""The port of a target that names none, as grpc has it."""

DEFAULT_CONCURRENCY = 16

_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*):")
_OTHER_SCHEMES = ("unix", "unix-abstract", "vsock", "xds", "google-c2p")


class Endpoint(NamedTuple):
    """One address a target resolves to."""

    address: str
    """`10.0.0.5:50051`, `[fd00::5]:50051`."""
    authority: str
    """The name and port it was resolved from (`petsage-grpc-headless:50051`): the `:authority`
    its calls carry and, with TLS, the name its certificate must hold. The address itself when
    the target gave an address."""


class ResolveError(OSError):
    """A name of the target does not resolve, or not in time; the message says which and why."""


def resolve(target: str | Sequence[str], timeout: float = 1.0) -> list[Endpoint]:
    """Every endpoint `target` names, sorted by address, each once.

    `target` is `dns:///name:port` (every A and AAAA record of the name: a headless Service gives
    one per ready pod), `ipv4:a:port,b:port` or `ipv6:[a]:port,[b]:port` as grpc spells them, or
    `host:port` items separated by commas (or in a list), each name resolved to all its
    addresses. A missing port is 443, as for grpc; `:port` is this machine. Each name must
    resolve within `timeout` seconds. Raises ValueError for a target it cannot read and
    ResolveError for a name that does not resolve (as a headless Service with no ready pod).
    """
    found: dict[str, Endpoint] = {}
    for host, port in _hosts(target):
        authority = format_address(host, port)
        for address in _addresses(host, port, timeout):
            endpoint = Endpoint(format_address(address, port), authority)
            found.setdefault(endpoint.address, endpoint)
    return sorted(found.values(), key=_address_order)


def _address_order(endpoint: Endpoint) -> tuple[int, int, int]:
    host, port = split_host_port(endpoint.address)
    address = ipaddress.ip_address(host)
    return address.version, int(address), port


def _hosts(target: str | Sequence[str]) -> list[tuple[str, int]]:
    """The (host, port) pairs a target names, before any name is resolved."""
    if not isinstance(target, str):
        items = list(target)
        if not items:
            raise ValueError("no backends")
        return [_host_port(item.strip(), this_machine=True) for item in items]
    text = target.strip()
    scheme = _SCHEME.match(text)
    name = scheme.group(1).lower() if scheme else ""
    rest = text[scheme.end() :] if scheme else text
    if name == "dns":
        if rest.startswith("//"):
            dns_server, _, rest = rest[2:].partition("/")
            if dns_server:
                raise ValueError(
                    f"{target!r}: a DNS server of its own is not supported; "
                    "the system's resolver answers dns:///name:port"
                )
        if "," in rest:
            raise ValueError(f"{target!r}: dns: names one host")
        return [_host_port(rest)]
    if name in ("ipv4", "ipv6"):
        pairs = [_host_port(item) for item in rest.split(",")]
        version = int(name[-1])
        for host, _ in pairs:
            try:
                literal = ipaddress.ip_address(host)
            except ValueError:
                literal = None
            if literal is None or literal.version != version:
                raise ValueError(f"{target!r}: {host!r} is not an IPv{version} address")
        return pairs
    if name in _OTHER_SCHEMES or "://" in text:
        raise ValueError(
            f"{target!r}: cannot list the endpoints of this target; give dns:///name:port, "
            "ipv4:/ipv6: addresses or host:port,host:port"
        )
    return [_host_port(item.strip(), this_machine=True) for item in text.split(",")]


def _host_port(text: str, this_machine: bool = False) -> tuple[str, int]:
    """`host:port`, `[v6]:port`, `host` or a bare IPv6 address (port 443); `:port` is localhost
    where `this_machine`, as grpc-go dials it."""
    port_text: str | None
    if text.startswith("["):
        host, closed, rest = text[1:].partition("]")
        if not closed or (rest and not rest.startswith(":")):
            raise ValueError(f"invalid address {text!r} (want host:port)")
        port_text = rest[1:] if rest else None
    elif text.count(":") > 1:
        host, port_text = text, None  # an IPv6 address without a port
    else:
        host, colon, port_text = text.partition(":")
        port_text = port_text if colon else None
        if not host and this_machine and colon:
            host = "localhost"
    if not host or any(c.isspace() or c in "/[]" for c in host):
        raise ValueError(f"invalid address {text!r} (want host:port)")
    if port_text is None:
        return host, DEFAULT_PORT
    if not port_text.isascii() or not port_text.isdigit() or not 0 < int(port_text) <= 65535:
        raise ValueError(f"invalid port in {text!r} (a number from 1 to 65535)")
    return host, int(port_text)


def _addresses(host: str, port: int, timeout: float) -> list[str]:
    """The IP addresses of `host` (itself if it is one), in the resolver's order."""
    try:
        return [str(ipaddress.ip_address(host))]
    except ValueError:
        pass
    answers: list[Any] = []
    done = threading.Event()

    def look_up() -> None:
        try:
            answers.extend(socket.getaddrinfo(host, port, type=socket.SOCK_STREAM))
        except (OSError, UnicodeError) as exc:
            answers.append(exc)
        finally:
            done.set()

    # getaddrinfo has no timeout of its own; a daemon thread holds no one up if it hangs.
    threading.Thread(target=look_up, name=f"resolve {host}", daemon=True).start()
    if not done.wait(timeout):
        raise ResolveError(f"{host}: name did not resolve within {format_seconds(timeout)}")
    if answers and isinstance(answers[-1], Exception):
        raise ResolveError(f"{host}: {_resolve_failure(answers[-1])}")
    addresses = [str(answer[4][0]) for answer in answers]
    if not addresses:
        raise ResolveError(f"{host}: name does not resolve")
    return list(dict.fromkeys(addresses))


def _resolve_failure(exc: Exception) -> str:
    if isinstance(exc, socket.gaierror):
        if exc.errno in (socket.EAI_NONAME, getattr(socket, "EAI_NODATA", socket.EAI_NONAME)):
            return "name does not resolve"
        if exc.errno == socket.EAI_AGAIN:
            return "temporary failure in name resolution"
    if isinstance(exc, UnicodeError):
        return "invalid name"
    return str(getattr(exc, "strerror", None) or exc).lower()


Status = Literal["OK", "DEGRADED", "FAILING", "UNREACHABLE", "ERROR"]

_VERDICTS: dict[int, Status] = {
    smoke_pb2.SMOKE_STATUS_OK: "OK",
    smoke_pb2.SMOKE_STATUS_DEGRADED: "DEGRADED",
}


@dataclass(frozen=True)
class EndpointResult:
    """What one endpoint answered to SmokeTest, or why it did not."""

    endpoint: Endpoint
    status: Status
    """`OK`, `DEGRADED` or `FAILING`: the endpoint's verdict (FAILING too for a status it does
    not name). `UNREACHABLE`: no connection within the connect timeout. `ERROR`: connected, but
    the SmokeTest call failed (`error` says how)."""
    response: smoke_pb2.SmokeTestResponse | None = None
    error: str = ""

    @property
    def address(self) -> str:
        return self.endpoint.address

    @property
    def version(self) -> str:
        return self.response.version if self.response else ""

    @property
    def instance(self) -> str:
        return self.response.instance if self.response else ""

    @property
    def uptime(self) -> float | None:
        """Seconds the endpoint has been serving, when it answered."""
        return self.response.uptime.ToNanoseconds() / 1e9 if self.response else None

    @property
    def failing_checks(self) -> list[tuple[str, str]]:
        """(name, last error) of each check that does not pass."""
        checks = self.response.checks if self.response else ()
        return [(check.name, check.last_error) for check in checks if not check.passing]

    def ok(self, version: str | None = None) -> bool:
        """Whether the endpoint is OK, and on `version` if one is given."""
        return self.status == "OK" and (version is None or self.version == version)


def endpoint_channel(
    endpoint: Endpoint,
    *,
    credentials: grpc.ChannelCredentials | None = None,
    server_name: str | None = None,
    options: Sequence[tuple[str, Any]] = (),
) -> grpc.Channel:
    """A channel to that one endpoint, resolving nothing and balancing nothing. Its calls carry
    the endpoint's authority (the name it was resolved from); with `credentials`, the server's
    certificate must hold that name, or `server_name`, which then is the authority."""
    address = ("ipv6:" if endpoint.address.startswith("[") else "ipv4:") + endpoint.address
    if credentials is not None and server_name:
        every = [*options, ("grpc.ssl_target_name_override", server_name)]
        return grpc.secure_channel(address, credentials, options=every)
    every = [("grpc.default_authority", endpoint.authority), *options]
    if credentials is None:
        return grpc.insecure_channel(address, options=every)
    return grpc.secure_channel(address, credentials, options=every)


def smoke_each(
    target: str | Sequence[str],
    *,
    credentials: grpc.ChannelCredentials | None = None,
    server_name: str | None = None,
    run_checks: bool = False,
    connect_timeout: float = 1.0,
    timeout: float = DEFAULT_TIMEOUT,
    concurrency: int = DEFAULT_CONCURRENCY,
    metadata: Sequence[tuple[str, str]] = (),
    compression: grpc.Compression | None = None,
    options: Sequence[tuple[str, Any]] = (),
    open_channel: Callable[[Endpoint], grpc.Channel] | None = None,
) -> list[EndpointResult]:
    """SmokeTest on every endpoint `target` resolves to (see `resolve()`), sorted by address.

    At most `concurrency` endpoints are called at once, each on a channel of its own
    (`endpoint_channel()` with `credentials`, `server_name` and `options`, or `open_channel`),
    within `connect_timeout` to connect and `timeout` for the call (`run_checks` asks each for a
    fresh run of its checks, bounded by that). An endpoint that cannot be reached or fails the
    call is a result too (UNREACHABLE, ERROR), never an exception. Raises what `resolve()`
    raises (`connect_timeout` bounds each name's resolution too).
    """
    if concurrency < 1:
        raise ValueError(f"concurrency {concurrency!r} is not a positive number")
    endpoints = resolve(target, connect_timeout)
    request = smoke_pb2.SmokeTestRequest(run_checks=run_checks)

    def open_one(endpoint: Endpoint) -> grpc.Channel:
        if open_channel is not None:
            return open_channel(endpoint)
        return endpoint_channel(
            endpoint, credentials=credentials, server_name=server_name, options=options
        )

    def smoke_one(endpoint: Endpoint) -> EndpointResult:
        try:
            channel = open_one(endpoint)
        except (OSError, ValueError) as exc:
            return EndpointResult(endpoint, "UNREACHABLE", error=str(exc))
        with channel:
            ready = grpc.channel_ready_future(channel)
            try:
                ready.result(timeout=connect_timeout)
            except grpc.FutureTimeoutError:
                ready.cancel()
                error = f"failed to connect within {format_seconds(connect_timeout)}"
                return EndpointResult(endpoint, "UNREACHABLE", error=error)
            try:
                response = smoke_pb2_grpc.SmokeServiceStub(channel).SmokeTest(
                    request, timeout=timeout, metadata=metadata or None, compression=compression
                )
            except grpc.RpcError as rpc_error:
                return EndpointResult(endpoint, "ERROR", error=_call_failure(rpc_error, timeout))
        return EndpointResult(endpoint, _VERDICTS.get(response.status, "FAILING"), response)

    if not endpoints:
        return []
    with ThreadPoolExecutor(min(concurrency, len(endpoints)), "smoke") as pool:
        return list(pool.map(smoke_one, endpoints))


def _call_failure(error: grpc.RpcError, timeout: float) -> str:
    code = error.code()
    if code == grpc.StatusCode.UNIMPLEMENTED:
        return "does not implement petsage.v1.SmokeService"
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return f"SmokeTest did not complete within {format_seconds(timeout)}"
    details = error.details()
    return f"SmokeTest failed: {code.name}" + (f": {details}" if details else "")
