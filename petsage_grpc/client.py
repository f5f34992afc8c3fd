"""Channels from other services to PetSage backends, as a rollout needs them.

    from petsage_grpc.client import channel
    with channel(["10.0.0.5:50051", "10.0.0.6:50051"]) as backends:
        stub = SmokeServiceStub(backends)

The channel spreads calls over every backend (`round_robin`) and does client-side health checking:
it opens a `grpc.health.v1` Watch of `health_service` on each connection and sends calls only to
backends that answer SERVING, so a backend that drains (NOT_SERVING during its drain delay) stops
getting calls before it stops listening. Calls that fail UNAVAILABLE (the backend went away before
taking the call) are retried on another backend, and every call gets a deadline unless it sets one.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Sequence
from typing import Any

import grpc

from petsage_grpc.values import split_host_port

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
