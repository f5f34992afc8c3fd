"""Dependencies for the check tests, each a real server on 127.0.0.1 in threads of the test
process: a TCP listener that counts connections, an HTTP server that answers a set status (over
TLS if asked) and records the headers it got, and one that trickles its answer a byte at a time."""

from __future__ import annotations

import http.server
import select
import socket
import ssl
import threading
from pathlib import Path
from typing import Any


class Listener:
    """Accepts TCP connections on 127.0.0.1 and counts them; closes each at once. `port` 0 picks
    a free one; another brings a stopped listener back on its port."""

    def __init__(self, port: int = 0) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", port))
        self.sock.listen(512)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self._stop = False
        self._thread = threading.Thread(target=self._accept, daemon=True)

    def __enter__(self) -> Listener:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop = True
        self.sock.close()

    def _accept(self) -> None:
        while not self._stop:
            try:
                connection, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            connection.close()


class Trickler:
    """An HTTP server that sends its answer one byte every `pause` seconds, and never finishes.
    It counts the connections opened and those the client still holds open."""

    def __init__(self, pause: float = 0.3) -> None:
        self.pause = pause
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(512)
        self.port = self.sock.getsockname()[1]
        self.opened = 0
        self.open = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()

    def __enter__(self) -> Trickler:
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self.sock.close()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                connection, _ = self.sock.accept()
            except OSError:
                return
            with self._lock:
                self.opened += 1
                self.open += 1
            threading.Thread(target=self._trickle, args=(connection,), daemon=True).start()

    def _trickle(self, connection: socket.socket) -> None:
        answer = b"HTTP/1.1 200 OK\r\ncontent-length: 100000\r\n\r\n" + b"x" * 100_000
        try:
            for byte in answer:
                # Wait a pause, but notice at once when the client closes the connection.
                readable, _, _ = select.select([connection], [], [], self.pause)
                if self._stop.is_set() or (readable and not connection.recv(65536)):
                    break
                connection.sendall(bytes([byte]))
        except OSError:
            pass  # the client reset it
        finally:
            with self._lock:
                self.open -= 1
            connection.close()


class WebServer:
    """An HTTP server answering GET with `status`, recording each request's headers."""

    def __init__(self, status: int = 200, tls: tuple[Path, Path] | None = None) -> None:
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.requests.append((self.path, dict(self.headers.items())))
                self.send_response(outer.status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.status = status
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        if tls is not None:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(*tls)
            self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
        self.port = self.httpd.server_address[1]

    def __enter__(self) -> WebServer:
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
