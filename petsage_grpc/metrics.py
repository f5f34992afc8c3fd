"""Metrics: counted on the request path with plain integers behind one uncontended lock (no
imports: every RPC pays for this; the lock keeps the counts whole when grpc's thread pool serves),
and turned into Prometheus metrics only when scraped.

`RpcMetrics` is what the server interceptor counts. `build_registry()` makes the Prometheus
registry that the admin port serves: the RPC counts and handling-time histogram, in-flight RPCs
(from `InFlight`),
open Watch streams, each service's serving status, each check's result, latency and consecutive
failures, the served TLS certificate's expiry, build info and process metrics. prometheus_client
is imported there, not before.
"""

from __future__ import annotations

import asyncio
import bisect
import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from petsage_grpc import __version__
from petsage_grpc.health import SERVING, HealthState
from petsage_grpc.inflight import InFlight, Method

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from petsage_grpc.monitor import HealthMonitor
    from petsage_grpc.tls import ServerTLS

BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
"""Handling-time histogram bounds, in seconds: health RPCs take well under a millisecond."""


class _Timing:
    __slots__ = ("buckets", "count", "total")

    def __init__(self) -> None:
        self.buckets = [0] * (len(BUCKETS) + 1)  # the last is +Inf
        self.count = 0
        self.total = 0.0


class RpcMetrics:
    """RPCs started and handled, by method and status code, and unary handling times."""

    def __init__(self) -> None:
        self.started: dict[Method, int] = {}
        self.handled: dict[tuple[Method, str], int] = {}
        self.timings: dict[Method, _Timing] = {}
        self._lock = threading.Lock()

    def start(self, method: Method) -> None:
        with self._lock:
            self.started[method] = self.started.get(method, 0) + 1

    def handle(self, method: Method, code: str, seconds: float | None) -> None:
        """Count an RPC that ended with `code`; `seconds` is its handling time (None: a stream,
        whose lifetime is no handling time)."""
        with self._lock:
            self._handle_locked(method, code, seconds)

    def _handle_locked(self, method: Method, code: str, seconds: float | None) -> None:
        key = (method, code)
        self.handled[key] = self.handled.get(key, 0) + 1
        if seconds is not None:
            timing = self.timings.get(method)
            if timing is None:
                timing = self.timings[method] = _Timing()
            timing.buckets[bisect.bisect_left(BUCKETS, seconds)] += 1
            timing.count += 1
            timing.total += seconds


class _Collector:
    """Reads the counts, the health state and the checks at scrape time."""

    def __init__(
        self,
        rpcs: RpcMetrics,
        in_flight: InFlight,
        state: HealthState,
        monitor: HealthMonitor,
        tls: ServerTLS | None = None,
        watch_streams_cut: Callable[[], int] = lambda: 0,
    ) -> None:
        self._rpcs, self._in_flight, self._state, self._monitor = rpcs, in_flight, state, monitor
        self._tls = tls
        self._watch_streams_cut = watch_streams_cut

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            HistogramMetricFamily,
            InfoMetricFamily,
        )

        labels = ["grpc_service", "grpc_method", "grpc_type"]
        started = CounterMetricFamily(
            "grpc_server_started", "RPCs started on the server.", labels=labels
        )
        for method, count in sorted(self._rpcs.started.items()):
            started.add_metric(list(method), count)
        yield started

        handled = CounterMetricFamily(
            "grpc_server_handled",
            "RPCs completed on the server, whatever their status code.",
            labels=[*labels, "grpc_code"],
        )
        for (method, code), count in sorted(self._rpcs.handled.items()):
            handled.add_metric([*method, code], count)
        yield handled

        histogram = HistogramMetricFamily(
            "grpc_server_handling_seconds",
            "How long unary RPCs took to handle, in seconds.",
            labels=labels,
        )
        for method, timing in sorted(self._rpcs.timings.items()):
            cumulative, buckets = 0, []
            for bound, count in zip((*map(str, BUCKETS), "+Inf"), timing.buckets, strict=True):
                cumulative += count
                buckets.append((bound, cumulative))
            histogram.add_metric(list(method), buckets, timing.total)
        yield histogram

        in_flight = GaugeMetricFamily(
            "grpc_server_in_flight_rpcs", "RPCs being handled now.", labels=labels
        )
        for method, count in sorted(self._in_flight.counts().items()):
            in_flight.add_metric(list(method), count)
        yield in_flight

        yield GaugeMetricFamily(
            "petsage_watch_streams",
            "Open grpc.health.v1 Watch streams.",
            value=self._state.watcher_count,
        )
        yield GaugeMetricFamily(
            "petsage_event_loop_tasks",
            "asyncio tasks alive on the server's event loop (checks, admin connections, TLS"
            " reload).",
            value=_tasks(),
        )
        yield CounterMetricFamily(
            "petsage_watch_streams_cut",
            "Watch streams cancelled because their client took no message for the send timeout.",
            value=self._watch_streams_cut(),
        )

        serving = GaugeMetricFamily(
            "petsage_health_serving",
            "1 while the health service's status is SERVING, else 0.",
            labels=["service"],
        )
        for service, status in sorted(self._state.statuses().items()):
            serving.add_metric([service], 1 if status == SERVING else 0)
        yield serving

        yield from self._checks()
        if self._tls is not None:
            yield GaugeMetricFamily(
                "petsage_tls_certificate_expiry_timestamp_seconds",
                "When the served TLS certificate expires (the soonest of its chain), in seconds"
                " since the Unix epoch.",
                value=self._tls.not_after,
            )
        info = InfoMetricFamily("petsage_build", "The running build.")
        info.add_metric([], {"version": __version__})
        yield info

    def _checks(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily

        labels = ["check", "kind", "required"]
        passing = GaugeMetricFamily(
            "petsage_check_passing", "1 while the dependency check passes, else 0.", labels=labels
        )
        latency = GaugeMetricFamily(
            "petsage_check_latency_seconds", "How long the check's last run took.", labels=labels
        )
        failures = GaugeMetricFamily(
            "petsage_check_consecutive_failures",
            "Failed runs of the check since its last success.",
            labels=labels,
        )
        now = time.monotonic()
        for runner in self._monitor.runners:
            spec = runner.spec
            values = [spec.name, spec.kind, "true" if spec.required else "false"]
            passing.add_metric(values, 1 if runner.is_passing(now) else 0)
            if runner.last_latency is not None:
                latency.add_metric(values, runner.last_latency)
            failures.add_metric(values, runner.consecutive_failures)
        yield from (passing, latency, failures)


def _tasks() -> int:
    try:
        return len(asyncio.all_tasks())
    except RuntimeError:  # scraped from off the loop (a test's own registry)
        return 0


def build_registry(
    rpcs: RpcMetrics,
    in_flight: InFlight,
    state: HealthState,
    monitor: HealthMonitor,
    tls: ServerTLS | None = None,
    *,
    watch_streams_cut: Callable[[], int] = lambda: 0,
) -> CollectorRegistry:
    """A Prometheus registry of this server's metrics and the process's (and, with `tls`, the
    served certificate's expiry; `watch_streams_cut`, how many Watch streams the servicers
    cancelled because their client took nothing)."""
    from prometheus_client import CollectorRegistry, PlatformCollector, ProcessCollector

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(rpcs, in_flight, state, monitor, tls, watch_streams_cut))
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    return registry
