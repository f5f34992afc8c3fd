"""The admin port: a small HTTP/1.1 server on the server's event loop, for Prometheus, for load
balancers and uptime checkers that speak only HTTP, and for clients of the original HTTP design.

    GET /metrics            Prometheus text format
    GET /healthz            liveness:  200 {"status": "SERVING"}, else 503
    GET /readyz             readiness: 200 {"status": "SERVING"}, else 503
    GET /api/v1/smoke-test  {"status": "ok"}                (or "degraded"; "failing" with 503)
    GET /api/v1/status      {"status": "ok", "message": ..., "version": ...}   (likewise)

Anything else is 404, a wrong method 405, both with a JSON error. HTTP/1.1 is parsed by h11
(pure Python, no dependencies, a few milliseconds to import); the socket work is asyncio's.
Like the servicers, every endpoint only reads state.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import urllib.parse
from collections.abc import Callable
from http import HTTPStatus
from typing import Any

import h11

from petsage_grpc import __version__
from petsage_grpc._gen.petsage.v1 import smoke_pb2
from petsage_grpc.health import SERVING
from petsage_grpc.monitor import LIVENESS, READINESS, HealthMonitor
from petsage_grpc.smoke import verdict

log = logging.getLogger(__name__)

REQUEST_TIMEOUT = 30.0
"""Seconds a connection has to send each whole request, idle time before it included."""

MAX_CONNECTIONS = 64
"""Connections served at once; more are closed at once (the endpoints answer in microseconds)."""

Response = tuple[int, bytes, str]
"""(status code, body, content type)."""

_JSON = "application/json"
_WORDS = {
    smoke_pb2.SMOKE_STATUS_OK: "ok",
    smoke_pb2.SMOKE_STATUS_DEGRADED: "degraded",
}


def _json(code: int, body: dict[str, Any]) -> Response:
    return code, json.dumps(body).encode(), _JSON


class AdminApp:
    """The endpoints: a request path in, a response out."""

    def __init__(
        self,
        monitor: HealthMonitor,
        metrics: Callable[[], tuple[bytes, str]],
        version: str = __version__,
    ) -> None:
        self._monitor = monitor
        self._metrics = metrics
        self._version = version
        self._routes: dict[str, Callable[[], Response]] = {
            "/metrics": self._prometheus,
            "/healthz": lambda: self._service_status(LIVENESS),
            "/readyz": lambda: self._service_status(READINESS),
            "/api/v1/smoke-test": self._smoke_test,
            "/api/v1/status": self._status,
        }

    def respond(self, method: str, target: str) -> tuple[Response, dict[str, str]]:
        """The response to `method target`, and extra headers."""
        path = urllib.parse.urlsplit(target).path or "/"  # origin or absolute form
        route = self._routes.get(path)
        if route is None:
            return _json(404, {"error": "not found", "path": path}), {}
        if method not in ("GET", "HEAD"):
            return _json(405, {"error": "method not allowed", "allowed": ["GET", "HEAD"]}), {
                "allow": "GET, HEAD"
            }
        return route(), {}

    def _prometheus(self) -> Response:
        body, content_type = self._metrics()
        return 200, body, content_type

    def _service_status(self, service: str) -> Response:
        status = self._monitor.state.get(service)
        serving = status == SERVING
        return _json(200 if serving else 503, {"status": "SERVING" if serving else "NOT_SERVING"})

    def _verdict(self) -> tuple[int, str, str]:
        status, message = verdict(self._monitor)
        word = _WORDS.get(status, "failing")
        return (503 if word == "failing" else 200), word, message

    def _smoke_test(self) -> Response:
        code, word, _ = self._verdict()
        return _json(code, {"status": word})

    def _status(self) -> Response:
        code, word, message = self._verdict()
        return _json(code, {"status": word, "message": message, "version": self._version})


class AdminServer:
    """Serves an AdminApp over HTTP/1.1 on asyncio streams."""

    def __init__(
        self,
        app: AdminApp,
        *,
        request_timeout: float = REQUEST_TIMEOUT,
        max_connections: int = MAX_CONNECTIONS,
    ) -> None:
        self._app = app
        self._request_timeout = request_timeout
        self._max_connections = max_connections
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()

    async def start(self, host: str, port: int) -> int:
        """Listen on host:port; returns the bound port. Raises OSError when it cannot."""
        self._server = await asyncio.start_server(self._serve, host, port)
        return int(self._server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for task in list(self._connections):
                task.cancel()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len(self._connections) >= self._max_connections:
            writer.close()
            return
        task = asyncio.current_task()
        if task is not None:
            self._connections.add(task)
        connection = h11.Connection(h11.SERVER)
        try:
            await self._converse(connection, reader, writer)
        except h11.RemoteProtocolError as exc:
            with contextlib.suppress(Exception):  # answer what cannot be parsed, if still possible
                body = json.dumps({"error": "bad request"}).encode()
                writer.write(
                    connection.send(
                        h11.Response(
                            status_code=exc.error_status_hint,
                            headers=[("content-type", _JSON), ("content-length", str(len(body)))],
                        )
                    )
                    + connection.send(h11.Data(data=body))
                    + connection.send(h11.EndOfMessage())
                )
                await writer.drain()
        except (h11.ProtocolError, ConnectionError, TimeoutError):
            pass  # a client gone or too slow: drop the connection
        finally:
            if task is not None:
                self._connections.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _converse(
        self, connection: h11.Connection, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        while True:
            deadline = asyncio.get_running_loop().time() + self._request_timeout
            event = await self._next_event(connection, reader, deadline)
            if isinstance(event, h11.ConnectionClosed | None):
                return
            if not isinstance(event, h11.Request):
                continue
            while not isinstance(
                await self._next_event(connection, reader, deadline), h11.EndOfMessage
            ):
                pass  # a body is not wanted: read past it
            method, target = (
                event.method.decode("ascii", "replace"),
                event.target.decode("ascii", "replace"),
            )
            (code, body, content_type), headers = self._app.respond(method, target)
            fields = [
                ("content-type", content_type),
                ("content-length", str(len(body))),
                ("cache-control", "no-store"),
                *headers.items(),
            ]
            reason = HTTPStatus(code).phrase.encode()
            writer.write(
                connection.send(h11.Response(status_code=code, headers=fields, reason=reason))
            )
            if method != "HEAD":
                writer.write(connection.send(h11.Data(data=body)))
            writer.write(connection.send(h11.EndOfMessage()))
            await writer.drain()
            if connection.our_state is h11.MUST_CLOSE:
                return
            connection.start_next_cycle()

    async def _next_event(
        self, connection: h11.Connection, reader: asyncio.StreamReader, deadline: float
    ) -> Any:
        """The next HTTP event; TimeoutError once `deadline` (loop time) passes: a client that
        trickles its request in holds its connection no longer than REQUEST_TIMEOUT."""
        loop = asyncio.get_running_loop()
        while True:
            event = connection.next_event()
            if event is not h11.NEED_DATA:
                return event
            data = await asyncio.wait_for(reader.read(65536), max(deadline - loop.time(), 0))
            connection.receive_data(data)
