"""The admin port: a small HTTP/1.1 server on the server's event loop, for Prometheus, for load
balancers and uptime checkers that speak only HTTP, and for clients of the original HTTP design.

    GET /metrics            Prometheus text format
    GET /healthz            liveness:  200 {"status": "SERVING"}, else 503
    GET /readyz             readiness: 200 {"status": "SERVING"}, else 503
    GET /api/v1/smoke-test  {"status": "ok"}                (or "degraded"; "failing" with 503)
    GET /api/v1/status      {"status": "ok", "message": ..., "version": ...}   (likewise)
    GET /api/v1/history     {"transitions": [{time, kind, name, old, new, reason}, ...]}
    GET /api/v1/health      everything the status page shows, as JSON
    GET /                   the status page for a browser (Accept: text/html), else the original
                            API's welcome {"message": ...}

Anything else is 404, a wrong method 405, both with a JSON error. HTTP/1.1 is parsed by h11
(pure Python, no dependencies, a few milliseconds to import); the socket work is asyncio's.
Like the servicers, every endpoint only reads state.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import struct
import time
import urllib.parse
from collections.abc import Callable
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

import h11

from petsage_grpc import __version__, status_page
from petsage_grpc._gen.petsage.v1 import smoke_pb2
from petsage_grpc.health import SERVING
from petsage_grpc.monitor import LIVENESS, READINESS, HealthMonitor
from petsage_grpc.smoke import verdict

if TYPE_CHECKING:
    from petsage_grpc.tls import ServerTLS

log = logging.getLogger(__name__)

HEADER_TIMEOUT = 5.0
"""Seconds a connection has to send a request line and headers, idle time before them included
(a kept-alive connection's wait between requests too). The kubelet and Prometheus send theirs at
once after connecting."""

REQUEST_TIMEOUT = 30.0
"""Seconds a connection has to send each whole request, body included, idle time before it."""

WRITE_TIMEOUT = 10.0
"""Seconds a client has to take in a response queued for it, each time the server waits."""

OUTPUT_BUFFER = 64 * 1024
"""Bytes of output queued on one connection past which no further pipelined request is read."""

SEND_BUFFER = 64 * 1024
"""The kernel's send buffer of each connection (SO_SNDBUF; Linux doubles it for its own use),
so that a client that reads nothing ties up this much, not megabytes."""

MAX_CONNECTIONS = 64
"""Connections open at once; at the cap, the one that has waited longest is closed for a new one
(the endpoints answer in microseconds)."""

STOP_TIMEOUT = 1.0
"""Seconds the stop waits for connections to end once told to (they end at once)."""

Response = tuple[int, bytes, str]
"""(status code, body, content type)."""

_JSON = "application/json"
_WORDS = {
    smoke_pb2.SMOKE_STATUS_OK: "ok",
    smoke_pb2.SMOKE_STATUS_DEGRADED: "degraded",
}


WELCOME = (
    "Welcome to the PetSage API. Open this address in a browser for the status page; "
    "/api/v1/status, /api/v1/history and /metrics for programs."
)
_PAGE_HEADERS = {
    "content-security-policy": status_page.CONTENT_SECURITY_POLICY,
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
}


def _json(code: int, body: dict[str, Any]) -> Response:
    return code, json.dumps(body).encode(), _JSON


class AdminApp:
    """The endpoints: a request path in, a response out."""

    def __init__(
        self,
        monitor: HealthMonitor,
        metrics: Callable[[], tuple[bytes, str]],
        tls: ServerTLS | None = None,
        *,
        version: str = __version__,
        instance: str = "",
        started: float | None = None,
    ) -> None:
        """`instance` and `started` (monotonic) are what the status page shows of the server."""
        self._monitor = monitor
        self._metrics = metrics
        self._tls = tls
        self._version = version
        self._instance = instance
        self._started = time.monotonic() if started is None else started
        self._routes: dict[str, Callable[[], Response]] = {
            "/metrics": self._prometheus,
            "/healthz": lambda: self._service_status(LIVENESS),
            "/readyz": lambda: self._service_status(READINESS),
            "/api/v1/smoke-test": self._smoke_test,
            "/api/v1/status": self._status,
            "/api/v1/health": lambda: _json(200, self._overview()),
            "/api/v1/history": self._history,
            "/status.css": lambda: (200, status_page.STYLE, "text/css; charset=utf-8"),
            "/status.js": lambda: (200, status_page.SCRIPT, "text/javascript; charset=utf-8"),
            "/favicon.svg": lambda: (200, status_page.ICON, "image/svg+xml"),
        }

    def respond(
        self, method: str, target: str, accept: str = ""
    ) -> tuple[Response, dict[str, str]]:
        """The response to `method target` (`accept`: the request's Accept header), and extra
        headers."""
        path = urllib.parse.urlsplit(target).path or "/"  # origin or absolute form
        route = self._routes.get(path)
        if route is None and path != "/":
            return _json(404, {"error": "not found", "path": path}), {}
        if method not in ("GET", "HEAD"):
            return _json(405, {"error": "method not allowed", "allowed": ["GET", "HEAD"]}), {
                "allow": "GET, HEAD"
            }
        if route is not None:
            return route(), _PAGE_HEADERS if path.startswith(("/status.", "/favicon")) else {}
        if "text/html" in accept.lower():  # a browser: the status page
            page = status_page.render(self._overview())
            return (200, page, "text/html; charset=utf-8"), _PAGE_HEADERS
        return _json(200, {"message": WELCOME}), {}  # the original API's welcome

    def _overview(self) -> dict[str, Any]:
        _, word, message = self._verdict()
        return status_page.overview(
            self._monitor,
            status=word,
            message=message,
            version=self._version,
            instance=self._instance,
            started=self._started,
        )

    def _history(self) -> Response:
        history = self._monitor.state.history
        changes = history.recent() if history is not None else []
        return _json(200, {"transitions": [status_page.transition_json(t) for t in changes]})

    def _prometheus(self) -> Response:
        body, content_type = self._metrics()
        return 200, body, content_type

    def _service_status(self, service: str) -> Response:
        status = self._monitor.state.get(service)
        serving = status == SERVING
        return _json(200 if serving else 503, {"status": "SERVING" if serving else "NOT_SERVING"})

    def _verdict(self) -> tuple[int, str, str]:
        status, message = verdict(self._monitor, self._tls)
        word = _WORDS.get(status, "failing")
        return (503 if word == "failing" else 200), word, message

    def _smoke_test(self) -> Response:
        code, word, _ = self._verdict()
        return _json(code, {"status": word})

    def _status(self) -> Response:
        code, word, message = self._verdict()
        return _json(code, {"status": word, "message": message, "version": self._version})


class _Connection:
    """One client connection, as the connection cap sees it."""

    __slots__ = ("idle", "since", "task", "writer")

    def __init__(self, writer: asyncio.StreamWriter, now: float) -> None:
        self.writer = writer
        self.since = now  # when it began to wait for its current request (or to take a response)
        self.idle = False  # between two requests of a kept-alive connection, nothing received yet
        self.task: asyncio.Task[None] | None = None

    def close(self) -> None:
        """Close at once, without waiting: gracefully when all that was written is with the
        kernel, else with a reset (RST), which also frees what the kernel still holds for it."""
        transport = self.writer.transport
        if transport.get_write_buffer_size() == 0:
            transport.close()
            return
        sock = self.writer.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()


class _BadRequest(Exception):
    """A request that must be answered 400 and its connection closed."""


class AdminServer:
    """Serves an AdminApp over HTTP/1.1 on asyncio streams.

    No client can hold the port: each connection has `header_timeout` seconds to send a request
    line and headers (idle keep-alive time included), `request_timeout` for the whole request,
    and `write_timeout` each time it must take in what it was sent; a connection keeps at most
    about OUTPUT_BUFFER + SEND_BUFFER bytes of output queued, and reads no further pipelined
    request meanwhile. At `max_connections`, a new connection closes the one that has waited
    longest (an idle kept-alive one first), so that a probe always gets its answer.
    """

    def __init__(
        self,
        app: AdminApp,
        *,
        header_timeout: float = HEADER_TIMEOUT,
        request_timeout: float = REQUEST_TIMEOUT,
        write_timeout: float = WRITE_TIMEOUT,
        max_connections: int = MAX_CONNECTIONS,
    ) -> None:
        self._app = app
        self._header_timeout = header_timeout
        self._request_timeout = request_timeout
        self._write_timeout = write_timeout
        self._max_connections = max_connections
        self._server: asyncio.Server | None = None
        self._stopping = False
        self._connections: set[_Connection] = set()

    @property
    def connection_count(self) -> int:
        """Connections open now."""
        return len(self._connections)

    async def start(self, host: str, port: int) -> int:
        """Listen on host:port; returns the bound port. Raises OSError when it cannot."""
        self._server = await asyncio.start_server(self._accept, host, port)
        return int(self._server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        """Stop listening and close every connection; output not yet taken is dropped."""
        if self._server is None:
            return
        server, self._server = self._server, None
        self._stopping = True
        server.close()
        tasks = [c.task for c in self._connections if c.task is not None]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=STOP_TIMEOUT)
        for connection in list(self._connections):  # any task that did not end: close it here
            connection.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(server.wait_closed(), STOP_TIMEOUT)

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # A plain callback, not a coroutine: the connection's task is ours from the start, so
        # that the stop can cancel it and it ends quietly (asyncio logs a cancelled callback task).
        loop = asyncio.get_running_loop()
        if self._stopping:
            writer.close()
            return
        if len(self._connections) >= self._max_connections:
            victim = min(self._connections, key=lambda c: (not c.idle, c.since))
            self._drop(victim)
        connection = _Connection(writer, loop.time())
        sock = writer.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):  # bounds what the kernel queues for it
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)
        writer.transport.set_write_buffer_limits(high=OUTPUT_BUFFER)
        self._connections.add(connection)
        connection.task = loop.create_task(self._serve(connection, reader))

    def _drop(self, connection: _Connection) -> None:
        self._connections.discard(connection)
        if connection.task is not None:
            connection.task.cancel()
        connection.close()

    async def _serve(self, connection: _Connection, reader: asyncio.StreamReader) -> None:
        try:
            await self._converse(connection, reader)
        except asyncio.CancelledError:
            pass  # made room for a newer connection, or the server stops: not an error
        except (h11.ProtocolError, OSError, TimeoutError):
            pass  # a client gone, too slow or not speaking HTTP: drop the connection
        finally:
            self._connections.discard(connection)
            connection.close()

    async def _converse(self, connection: _Connection, reader: asyncio.StreamReader) -> None:
        http = h11.Connection(h11.SERVER)
        loop = asyncio.get_running_loop()
        while True:
            start = loop.time()
            try:
                event = await self._next_event(
                    http, reader, connection, start + self._header_timeout
                )
                if not isinstance(event, h11.Request):
                    return  # the client closed the connection
                if _framed_two_ways(event):
                    # RFC 9112 section 6.1: answer, and close the connection, whatever the body.
                    raise _BadRequest
                while not isinstance(
                    await self._next_event(http, reader, connection, start + self._request_timeout),
                    h11.EndOfMessage,
                ):
                    pass  # a body is not wanted: read past it
            except (h11.RemoteProtocolError, _BadRequest) as exc:
                status = exc.error_status_hint if isinstance(exc, h11.RemoteProtocolError) else 400
                await self._refuse(http, connection, status)
                return
            await self._respond(http, connection, event)
            if http.our_state is h11.MUST_CLOSE:
                await self._flush(connection)
                return
            http.start_next_cycle()
            connection.since, connection.idle = loop.time(), True

    async def _respond(
        self, http: h11.Connection, connection: _Connection, request: h11.Request
    ) -> None:
        method = request.method.decode("ascii", "replace")
        target = request.target.decode("ascii", "replace")
        accept = ", ".join(
            value.decode("latin-1") for name, value in request.headers if name == b"accept"
        )
        try:
            (code, body, content_type), headers = self._app.respond(method, target, accept)
        except Exception as exc:  # a bug behind an endpoint: say so in one line, answer 500
            log.error(
                "admin port: %s %s failed: %s: %s",
                method,
                urllib.parse.urlsplit(target).path,
                type(exc).__name__,
                exc,
                extra={"event": "admin_error", "error": str(exc)},
            )
            (code, body, content_type), headers = _json(500, {"error": "internal error"}), {}
        fields = [
            ("content-type", content_type),
            ("content-length", str(len(body))),
            ("cache-control", "no-store"),
            *headers.items(),
        ]
        reason = HTTPStatus(code).phrase.encode()
        writer = connection.writer
        writer.write(http.send(h11.Response(status_code=code, headers=fields, reason=reason)))
        if method != "HEAD":
            writer.write(http.send(h11.Data(data=body)))
        writer.write(http.send(h11.EndOfMessage()))
        await self._drain(connection)

    async def _refuse(self, http: h11.Connection, connection: _Connection, status: int) -> None:
        """Answer what cannot be served as a request, `connection: close`, and flush it."""
        body = json.dumps({"error": "bad request"}).encode()
        headers = [
            ("content-type", _JSON),
            ("content-length", str(len(body))),
            ("connection", "close"),
        ]
        try:
            data = http.send(h11.Response(status_code=status, headers=headers))
            data += http.send(h11.Data(data=body)) + http.send(h11.EndOfMessage())
        except h11.LocalProtocolError:
            return  # too late to answer (a response was already under way)
        connection.writer.write(data)
        await self._flush(connection)

    async def _drain(self, connection: _Connection) -> None:
        """Wait, at most `write_timeout`, until the output queued is below OUTPUT_BUFFER; no
        further request is read meanwhile. TimeoutError when the client does not take it."""
        connection.since = asyncio.get_running_loop().time()
        await asyncio.wait_for(connection.writer.drain(), self._write_timeout)

    async def _flush(self, connection: _Connection) -> None:
        """Before a close: wait, at most `write_timeout`, until all output is with the kernel."""
        connection.writer.transport.set_write_buffer_limits(high=0)  # drain() waits for empty
        await self._drain(connection)

    async def _next_event(
        self,
        http: h11.Connection,
        reader: asyncio.StreamReader,
        connection: _Connection,
        deadline: float,
    ) -> Any:
        """The next HTTP event; TimeoutError once `deadline` (loop time) passes: a client that
        trickles its request in holds its connection no longer than that."""
        loop = asyncio.get_running_loop()
        while True:
            event = http.next_event()
            if event is not h11.NEED_DATA:
                return event
            data = await asyncio.wait_for(reader.read(65536), max(deadline - loop.time(), 0))
            if data:
                connection.idle = False
            http.receive_data(data)


def _framed_two_ways(request: h11.Request) -> bool:
    """Whether a request carries both Content-Length and Transfer-Encoding (h11 goes by the
    latter and keeps the connection; RFC 9112 wants it closed: the shape of request smuggling)."""
    names = {name for name, _ in request.headers}
    return b"content-length" in names and b"transfer-encoding" in names
