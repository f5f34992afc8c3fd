"""Server: the lifecycle of one PetSage gRPC server — bind, serve, drain on a signal, stop.

Shutdown, on SIGTERM or SIGINT (or `request_stop()`):
1. every service, liveness too, goes NOT_SERVING at once; open Watch streams receive it, and the
   dependency checks stop;
2. the drain delay passes while RPCs are still answered, so load balancers notice;
3. open Watch streams end with OK, new RPCs are refused, and in-flight RPCs get the grace period
   (on the main port and the health-only port alike);
4. the server stops. A second signal at any point skips what is left and stops at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import faulthandler
import logging
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Coroutine, Sequence
from concurrent import futures
from typing import TYPE_CHECKING, Any, TypeVar

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from petsage_grpc import __version__, signals
from petsage_grpc._gen.petsage.v1 import smoke_pb2_grpc
from petsage_grpc.addresses import AddressFile, AddressFileError, Listener
from petsage_grpc.config import Config
from petsage_grpc.health import HealthServicer, HealthState
from petsage_grpc.history import History
from petsage_grpc.inflight import InFlight, Method
from petsage_grpc.interceptors import ServerInterceptor, SyncServerInterceptor
from petsage_grpc.metrics import RpcMetrics
from petsage_grpc.monitor import HealthMonitor
from petsage_grpc.pools import OnPool
from petsage_grpc.smoke import SERVICE_NAME as SMOKE_SERVICE_NAME
from petsage_grpc.smoke import SmokeServicer, instance_name
from petsage_grpc.sync_health import SyncHealthServicer
from petsage_grpc.values import format_address, format_seconds

if TYPE_CHECKING:  # imported where used: a server without them starts faster
    from petsage_grpc.admin import AdminServer
    from petsage_grpc.tls import ServerTLS

log = logging.getLogger(__name__)

HEALTH_SERVICE_NAME = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name


def grpc_options(config: Config) -> list[tuple[str, int]]:
    """The grpc server settings that the limits of `config` stand for."""
    options = [
        # Refuse an address another process already listens on, rather than silently sharing it.
        ("grpc.so_reuseport", 0),
        ("grpc.max_receive_message_length", config.max_receive_message_bytes),
        ("grpc.max_concurrent_streams", config.max_concurrent_streams),
        # A client that pings more often than this gets strikes, then GOAWAY (too_many_pings).
        (
            "grpc.http2.min_recv_ping_interval_without_data_ms",
            _ms(config.keepalive_min_ping_interval),
        ),
        ("grpc.http2.max_ping_strikes", 2),
        ("grpc.keepalive_permit_without_calls", 1),
        # grpc core cancels calls at random once more than 1,000 wait for the application to
        # take them (3,000 at the most): a burst of Watch streams, as a fleet of clients opens
        # after a rollout, would lose some. Let the Watch limit decide instead, with its clear
        # RESOURCE_EXHAUSTED.
        ("grpc.server.max_pending_requests", max(1000, config.max_watch_streams)),
        (
            "grpc.server.max_pending_requests_hard_limit",
            min(2 * max(1000, config.max_watch_streams), 2**31 - 1),
        ),
    ]
    if config.max_connection_age > 0:
        options += [
            ("grpc.max_connection_age_ms", _ms(config.max_connection_age)),
            ("grpc.max_connection_age_grace_ms", _ms(config.max_connection_age_grace)),
        ]
    return options


def _ms(seconds: float) -> int:
    return min(int(seconds * 1000), 2**31 - 1)


WORKERS = 16
"""Threads of the main port's own pool, for the application's services and reflection."""
HEALTH_WORKERS = 8
"""Threads of the main port's pool for grpc.health.v1 (Check, List, a Watch's start; an open
Watch stream holds none): nothing else runs there, so nothing else can keep a probe waiting."""
SMOKE_WORKERS = 8
"""Threads for SmokeTest, whose fresh run of the checks waits for them."""

BIND_WAIT = 30.0
"""Seconds the health-only port's thread may take to make its server or bind its port."""

T = TypeVar("T")

WATCH: Method = ("grpc.health.v1.Health", "Watch", "server_stream")
WATCH_FLUSH = 0.5
"""Seconds a Watch stream's client may take nothing, while the stop waits for the other streams'
last status, before the stop counts it as reading nothing and cuts it."""


class BindError(RuntimeError):
    """The server could not listen on its address; the message says why."""


class Server:
    """One PetSage server: its gRPC servers (grpc's thread-pool server for the main port, grpc.aio
    for the health-only port), its servicers, its health state and monitor.

    `services` are the application's services hosted beside SmokeService; `version` is the
    version SmokeTest and /api/v1/status report (default petsage-grpc's). Raises CheckSetupError
    when a configured check cannot be set up."""

    def __init__(
        self,
        config: Config,
        *,
        state: HealthState | None = None,
        services: Sequence[grpc.ServiceRpcHandler] = (),
        version: str = __version__,
    ) -> None:
        self.config = config
        # What SmokeTest and /api/v1/status report as the version: an embedding application's own.
        self.version = version
        self.state = (
            HealthState(
                max_unknown_services=config.max_unknown_services,
                history=History(config.history_size),
            )
            if state is None
            else state
        )
        self.port: int | None = None
        self.health_port: int | None = None
        self.admin_port: int | None = None
        self.metrics = RpcMetrics()
        self.in_flight = InFlight()
        self._interceptor = SyncServerInterceptor(
            self.metrics, self.in_flight, access_log_health=config.access_log_health
        )
        # The health-only port's (grpc.aio), under the same limit on rejection logs.
        self._aio_interceptor = ServerInterceptor(
            self.metrics, self.in_flight, access_log_health=config.access_log_health
        )
        self._aio_interceptor.rejections = self._interceptor.rejections
        self._admin: AdminServer | None = None
        self._tls: ServerTLS | None = None
        self._address_file: AddressFile | None = None
        self._services = tuple(services)
        self.monitor = HealthMonitor(
            self.state,
            config.checks,
            (*self.service_names, *config.services),
            fresh_run_reuse=config.fresh_run_reuse,
        )
        self._servers: list[_Listener | _AioListener] = []
        self._main: _Listener | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._stop_requested = asyncio.Event()
        self._force_requested = asyncio.Event()

    @property
    def service_names(self) -> tuple[str, ...]:
        """The gRPC services this server hosts, each registered in health."""
        return (SMOKE_SERVICE_NAME, *(s.service_name() for s in self._services))

    async def start(self) -> None:
        """Bind the ports, start the checks and serving; liveness is SERVING at once, and
        readiness once the required checks pass. Raises BindError, TLSError or
        AddressFileError."""
        config = self.config
        self._started = time.monotonic()
        address_file = AddressFile(config.address_file) if config.address_file else None
        if address_file is not None:
            address_file.check()  # before anything is bound
        tls = None
        if config.tls:
            from petsage_grpc.tls import ServerTLS

            tls = self._tls = ServerTLS(
                config.tls_cert,
                config.tls_key,
                config.tls_client_ca,
                expiry_warning=config.tls_expiry_warning,
            )
        main = self._main = self._main_listener()
        smoke = SmokeServicer(
            self.monitor,
            started=self._started,
            version=self.version,
            tls=tls,
            loop=asyncio.get_running_loop(),
        )
        smoke_pb2_grpc.add_SmokeServiceServicer_to_server(
            OnPool(smoke, main.pool(SMOKE_WORKERS, "petsage-smoke")), main.server
        )
        main.add_generic_rpc_handlers(self._services)
        if config.reflection:
            reflection.enable_server_reflection(
                (HEALTH_SERVICE_NAME, *self.service_names, reflection.SERVICE_NAME), main.server
            )
        servers: list[_Listener | _AioListener] = [main]
        monitoring = False
        try:
            self.port = _bind(main, config.host, config.port, tls)
            if config.health_port is not None:
                # Only grpc.health.v1, in plaintext: for kubelet probes of a pod whose main port
                # wants client certificates.
                health_only = self._health_only_listener(config.health_port_max_watch_streams)
                servers.append(health_only)
                self.health_port = _bind(health_only, self.health_host, config.health_port, None)
            self.monitor.start()
            monitoring = True
            if config.admin_port is not None:
                self._admin = await self._start_admin(config.admin_host, config.admin_port, tls)
            for each in servers:
                await each.start()
        except BaseException:  # nothing it started outlives a failed start
            await self._undo_start(servers, monitoring)
            raise
        self._servers = servers
        if tls is not None:
            self._tasks.append(asyncio.create_task(tls.watch(config.tls_reload_interval)))
        security = "plaintext" if tls is None else "mTLS" if tls.mutual else "TLS"
        if address_file is not None:  # before the log says it serves
            try:
                address_file.publish(self.listeners(security))
            except AddressFileError:
                self.request_stop(force=True)
                await self.drain_and_stop()
                raise
            self._address_file = address_file
        self._log_started(security)

    async def _undo_start(self, servers: list[_Listener | _AioListener], monitoring: bool) -> None:
        if monitoring:  # else the state (perhaps the application's own) is left as it was
            await self.monitor.close()
        # A listener that never started frees its port only once started: it must serve nothing.
        self._interceptor.refusing = self._aio_interceptor.refusing = True
        for each in servers:
            await each.stop(None)
        if self._admin is not None:
            await self._admin.stop()
            self._admin = None

    def listeners(self, security: str) -> dict[str, Listener]:
        """The ports this server listens on, by name (main, health, admin), once started."""
        config = self.config
        assert self.port is not None
        found = {"main": Listener(config.host, self.port, security)}
        if self.health_port is not None:
            found["health"] = Listener(self.health_host, self.health_port, "plaintext")
        if self.admin_port is not None:
            found["admin"] = Listener(config.admin_host, self.admin_port, "http")
        return found

    def _main_listener(self) -> _Listener:
        """The main port's grpc server: grpc.health.v1 from the state, with the main port's Watch
        stream budget, and the interceptor."""
        pool = futures.ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="petsage-rpc")
        server = grpc.server(
            pool, options=grpc_options(self.config), interceptors=[self._interceptor]
        )
        health = SyncHealthServicer(
            self.state,
            max_service_name_bytes=self.config.max_service_name_bytes,
            max_watch_streams=self.config.max_watch_streams,
            stuck_after=self.config.watch_send_timeout,
        )
        listener = _Listener(server, pool, health)
        health_pb2_grpc.add_HealthServicer_to_server(
            OnPool(health, listener.pool(HEALTH_WORKERS, "petsage-health")), server
        )
        return listener

    def _health_only_listener(self, max_watch_streams: int) -> _AioListener:
        """The health-only port, the one kubelet probes: on grpc.aio, which reads requests on an
        event loop, not on pool threads (grpc's thread-pool server gives a call a thread as its
        headers arrive, and a client that never sends the body holds it until it hangs up, so a
        few such calls would leave the probes none); on a loop of its own thread, so that nothing
        the main loop runs (the checks, the admin port) can delay a probe either."""
        config = self.config

        def server() -> grpc.aio.Server:
            made = grpc.aio.server(
                options=grpc_options(config), interceptors=[self._aio_interceptor]
            )
            health = HealthServicer(
                self.state,
                max_service_name_bytes=config.max_service_name_bytes,
                max_watch_streams=max_watch_streams,
            )
            health_pb2_grpc.add_HealthServicer_to_server(health, made)
            return made

        return _AioListener(server)

    def _log_started(self, security: str) -> None:
        config = self.config
        listeners = [("main", config.host, self.port, f"petsage-grpc {__version__} serving on")]
        if self.health_port is not None:
            listeners.append(
                ("health", self.health_host, self.health_port, "health-only plaintext port on")
            )
        if self.admin_port is not None:
            listeners.append(("admin", config.admin_host, self.admin_port, "admin HTTP port on"))
        for listener, host, port, what in listeners:
            assert port is not None
            fields: dict[str, object] = {"event": "serving", "port": port, "listener": listener}
            suffix = ""
            if listener == "main":
                fields["tls"] = security
                suffix = f" ({security})"
            log.info("%s %s%s", what, format_address(host, port), suffix, extra=fields)

    async def _start_admin(self, host: str, port: int, tls: ServerTLS | None) -> AdminServer:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        from petsage_grpc.admin import AdminApp, AdminServer
        from petsage_grpc.metrics import build_registry

        registry = build_registry(
            self.metrics,
            self.in_flight,
            self.state,
            self.monitor,
            tls,
            watch_streams_cut=lambda: self._main.health.cut_streams if self._main else 0,
        )
        admin = AdminServer(
            AdminApp(
                self.monitor,
                lambda: (generate_latest(registry), CONTENT_TYPE_LATEST),
                tls,
                version=self.version,
                instance=instance_name(),
                started=self._started,
            )
        )
        try:
            self.admin_port = await admin.start(host, port)
        except OSError:
            raise BindError(_explain_bind_failure(host, port)) from None
        return admin

    @property
    def health_host(self) -> str:
        return self.config.health_host or self.config.host

    def request_stop(self, *, force: bool = False) -> None:
        """Begin the shutdown sequence; with `force`, stop at once. Call on the server's loop."""
        self._stop_requested.set()
        if force:
            self._force_requested.set()

    async def serve(self, *, handle_signals: bool = True) -> int:
        """Start, serve until a stop is requested, shut down. Returns the process exit code:
        0 after a graceful stop, 1 when a forced stop may have cut RPCs short.

        With `handle_signals`, the server acts on the signals of `petsage_grpc.signals`; those
        held since the process began (`signals.hold()`) are acted on now."""
        if handle_signals:
            self._install_signal_handlers()
            signals.release()
        await self.start()
        await self._stop_requested.wait()
        return 0 if await self.drain_and_stop() else 1

    async def drain_and_stop(self) -> bool:
        """Drain and stop (see the module docstring). Returns False if the stop was forced."""
        servers, self._servers = self._servers, []
        if not servers:
            return True
        config = self.config
        for task in self._tasks:
            task.cancel()
        # Every service NOT_SERVING now; the checks stop meanwhile (within about a second,
        # whatever the dependencies do).
        closing = asyncio.ensure_future(self.monitor.close())
        if config.drain_delay > 0 and not self._force_requested.is_set():
            log.info(
                "draining: NOT_SERVING for %s before stopping",
                format_seconds(config.drain_delay),
                extra={"event": "draining", "drain_delay": config.drain_delay},
            )
            await _wait(self._force_requested, config.drain_delay)
        if not closing.done():  # a second signal does not wait for the checks either
            force = asyncio.ensure_future(self._force_requested.wait())
            await asyncio.wait((closing, force), return_when=asyncio.FIRST_COMPLETED)
            force.cancel()
        forced = self._force_requested.is_set()
        grace = 0.0 if forced else config.grace_period
        log.info(
            "stopping: new RPCs refused, in-flight RPCs have %s to finish",
            format_seconds(grace),
            extra={"event": "stopping", "grace_period": grace},
        )
        self.state.end_watches()
        stopping = asyncio.gather(*(server.stop(grace) for server in servers))
        if not forced:
            force = asyncio.ensure_future(self._force_requested.wait())
            stuck = asyncio.ensure_future(self._only_stuck_watches_left())
            await asyncio.wait((stopping, force, stuck), return_when=asyncio.FIRST_COMPLETED)
            force.cancel()
            stuck.cancel()
            await asyncio.gather(force, stuck, return_exceptions=True)
            if not stopping.done():
                if self._force_requested.is_set():
                    log.info(
                        "stopping at once: in-flight RPCs are cancelled", extra={"event": "forced"}
                    )
                else:
                    log.info(
                        "ending %d Watch streams whose clients read nothing",
                        self.state.watcher_count,
                        extra={"event": "stuck_watches_ended"},
                    )
                await asyncio.gather(*(server.stop(None) for server in servers))
        await stopping
        if self._admin is not None:
            await self._admin.stop()
        if self._address_file is not None:
            self._address_file.remove()
        forced = self._force_requested.is_set()
        log.info("stopped%s", " (forced)" if forced else "", extra={"event": "stopped"})
        return not forced

    async def _only_stuck_watches_left(self) -> None:
        """Return once every RPC but Watch streams has ended, and every Watch stream still open
        has a client that has taken nothing for WATCH_FLUSH seconds: the others have been sent
        their last status and their end, however many there are; these would hold the stop for
        the whole grace period."""
        await self.in_flight.quiet(WATCH, WATCH_FLUSH)
        # The health-only port's asyncio servicer has no senders: its streams each write their own.
        while self._main is not None and not self._main.health.settled(WATCH_FLUSH):
            await asyncio.sleep(WATCH_FLUSH / 5)

    def _install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for signum in signals.STOP:
            loop.add_signal_handler(signum, self._on_stop_signal, signum)
        loop.add_signal_handler(signal.SIGHUP, self._on_hangup)
        loop.add_signal_handler(signal.SIGUSR2, self._on_ignored, signal.SIGUSR2)
        # Written by the C handler itself, so it works even when the event loop is stuck.
        faulthandler.register(signal.SIGUSR1, file=sys.stderr, all_threads=True)

    def _on_stop_signal(self, signum: int) -> None:
        name = signal.Signals(signum).name
        if self._stop_requested.is_set():
            log.warning(
                "received %s again: stopping at once",
                name,
                extra={"event": "signal", "signal": name},
            )
            self.request_stop(force=True)
        else:
            log.info("received %s: shutting down", name, extra={"event": "signal", "signal": name})
            self.request_stop()

    def _on_hangup(self) -> None:
        fields = {"event": "signal", "signal": "SIGHUP"}
        if self._tls is None:
            log.info("received SIGHUP: no TLS files to re-read", extra=fields)
            return
        log.info("received SIGHUP: re-reading the TLS files", extra=fields)
        self._tls.reload()

    def _on_ignored(self, signum: int) -> None:
        name = signal.Signals(signum).name
        log.info("received %s: ignored", name, extra={"event": "signal", "signal": name})


class _Listener:
    """One of grpc's thread-pool servers, with the asyncio face the lifecycle uses: `stop()`
    waits for grpc's stop on a thread, never on the event loop, then ends the threads of its
    pools and of its health servicer."""

    def __init__(
        self, server: grpc.Server, pool: futures.ThreadPoolExecutor, health: SyncHealthServicer
    ) -> None:
        self.server = server
        self._pools = [pool]
        self.health = health
        self._started = False

    def pool(self, workers: int, name: str) -> futures.ThreadPoolExecutor:
        """A pool of the listener's own for some of its RPCs (`pools.OnPool`), stopped with it."""
        pool = futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix=name)
        self._pools.append(pool)
        return pool

    def add_insecure_port(self, address: str) -> int:
        return int(self.server.add_insecure_port(address))

    def add_secure_port(self, address: str, credentials: grpc.ServerCredentials) -> int:
        return int(self.server.add_secure_port(address, credentials))

    def add_generic_rpc_handlers(self, handlers: Sequence[grpc.GenericRpcHandler]) -> None:
        self.server.add_generic_rpc_handlers(tuple(handlers))

    async def start(self) -> None:
        self.server.start()
        self._started = True

    async def stop(self, grace: float | None) -> None:
        """Refuse new RPCs; cancel those still running after `grace` seconds (None: now)."""

        def stop() -> None:
            if not self._started:  # grpcio releases a server's ports only once it has started
                self.server.start()
            self.server.stop(grace).wait()

        await asyncio.to_thread(stop)
        self.health.close()
        for pool in self._pools:
            pool.shutdown(wait=False)


class _AioListener:
    """A grpc.aio server on an event loop of its own thread, with the face of `_Listener`."""

    def __init__(self, server: Callable[[], grpc.aio.Server]) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="petsage-health-port", daemon=True
        )
        self._thread.start()
        self._started = False
        self.server = self._call(server)  # made on its loop, which grpc.aio binds it to

    def _call(self, step: Callable[[], T]) -> T:
        """`step()` run on the listener's loop and waited for (a quick one: binding a port)."""

        async def on_its_loop() -> T:
            return step()

        return asyncio.run_coroutine_threadsafe(on_its_loop(), self._loop).result(BIND_WAIT)

    async def _on_its_loop(self, step: Coroutine[Any, Any, T]) -> T:
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(step, self._loop))

    def add_insecure_port(self, address: str) -> int:
        return int(self._call(lambda: self.server.add_insecure_port(address)))

    def add_secure_port(self, address: str, credentials: grpc.ServerCredentials) -> int:
        return int(self._call(lambda: self.server.add_secure_port(address, credentials)))

    async def start(self) -> None:
        await self._on_its_loop(self.server.start())
        self._started = True

    async def stop(self, grace: float | None) -> None:
        """Refuse new RPCs; cancel those still running after `grace` seconds (None: now); then
        end the listener's thread."""
        if not self._started:  # as grpc's thread-pool server, it frees its ports only so
            await self._on_its_loop(self.server.start())
        await self._on_its_loop(self.server.stop(grace))
        self._loop.call_soon_threadsafe(self._loop.stop)
        await asyncio.to_thread(self._thread.join)
        self._loop.close()


def _bind(server: _Listener | _AioListener, host: str, port: int, tls: ServerTLS | None) -> int:
    address = format_address(host, port)
    try:
        if tls is None:
            return int(server.add_insecure_port(address))
        return int(server.add_secure_port(address, tls.credentials()))
    except RuntimeError:
        raise BindError(_explain_bind_failure(host, port)) from None


async def _wait(event: asyncio.Event, timeout: float) -> None:
    """Wait until `event` is set or `timeout` seconds pass, whichever is first."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(event.wait(), timeout)


def _explain_bind_failure(host: str, port: int) -> str:
    """Why grpc could not bind: resolve and bind the address once more to learn the OS's reason."""
    shown = format_address(host, port)
    try:
        addresses = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        return f"cannot listen on {shown}: cannot resolve host {host!r} ({exc.strerror})"
    for family, kind, proto, _, address in addresses:
        with socket.socket(family, kind, proto) as trial:
            try:
                trial.bind(address)
            except OSError as exc:
                return f"cannot listen on {shown}: {exc.strerror}"
    return f"cannot listen on {shown}"
