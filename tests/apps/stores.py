"""Real PostgreSQL and Redis servers for the tests, on 127.0.0.1, each in a throwaway directory.

PostgreSQL comes from Debian's `postgresql` package (initdb and pg_ctl; run as the `postgres`
user when the tests run as root, as initdb refuses root), Redis from `redis-server`. `make test`
installs both when missing. Every start and stop is bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.helpers import free_port

ADMIN_PASSWORD = "admin-s3cret"
APP_USER, APP_PASSWORD, APP_DATABASE = "petsage", "app-s3cret", "petsage"
START_TIMEOUT = 30.0


def _postgres_bin(name: str) -> str:
    found = shutil.which(name) or next(
        iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)), None
    )
    if found is None:
        raise RuntimeError(f"{name} not found: install Debian's postgresql (make test does)")
    return found


class Postgres:
    """A PostgreSQL server: superuser `postgres`, and the application's user and database."""

    def __init__(self, max_connections: int = 10) -> None:
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="petsage-pg-"))
        self.data = self.root / "data"
        self._as: dict[str, Any] = {}
        if os.getuid() == 0:  # initdb and postgres refuse to run as root
            account = pwd.getpwnam("postgres")
            os.chown(self.root, account.pw_uid, account.pw_gid)
            self._as = {"user": account.pw_uid, "group": account.pw_gid}
        password_file = self.root / "password"
        password_file.write_text(ADMIN_PASSWORD)
        if self._as:
            os.chown(password_file, self._as["user"], self._as["group"])
        self._run(
            _postgres_bin("initdb"), "-D", str(self.data), "-U", "postgres",
            "--auth=scram-sha-256", f"--pwfile={password_file}", "--no-sync",
        )  # fmt: skip
        with open(self.data / "postgresql.conf", "a") as conf:
            conf.write(
                f"port = {self.port}\nlisten_addresses = '127.0.0.1'\n"
                f"unix_socket_directories = '{self.root}'\nmax_connections = {max_connections}\n"
                "superuser_reserved_connections = 2\nfsync = off\n"
            )
        self.start()
        self.sql(
            f"CREATE ROLE {APP_USER} LOGIN PASSWORD '{APP_PASSWORD}'",
            f"CREATE DATABASE {APP_DATABASE} OWNER {APP_USER}",
            "CREATE DATABASE readonly",
            "ALTER DATABASE readonly SET default_transaction_read_only = on",
            f"GRANT CONNECT ON DATABASE readonly TO {APP_USER}",
        )

    def _run(self, *command: str) -> None:
        subprocess.run(
            command,
            check=True,
            capture_output=True,
            timeout=START_TIMEOUT,
            cwd=self.root,
            **self._as,
        )

    def start(self) -> None:
        self._run(
            _postgres_bin("pg_ctl"), "-D", str(self.data), "-l", str(self.root / "log"),
            "-w", "-t", str(int(START_TIMEOUT)), "start",
        )  # fmt: skip

    def stop(self) -> None:
        self._run(_postgres_bin("pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def sql(self, *statements: str, database: str = "postgres") -> list[Any]:
        """Run statements as the superuser; the rows of the last."""

        async def run() -> list[Any]:
            import asyncpg

            connection = await asyncpg.connect(
                host="127.0.0.1", port=self.port, user="postgres", password=ADMIN_PASSWORD,
                database=database, timeout=START_TIMEOUT,
            )  # fmt: skip
            try:
                rows: list[Any] = []
                for statement in statements:
                    rows = await connection.fetch(statement)
                return rows
            finally:
                await connection.close()

        return asyncio.run(run())

    def close(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):  # already stopped
            self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


class Redis:
    """A redis-server on 127.0.0.1 with no persistence, DEBUG allowed (for DEBUG SLEEP)."""

    def __init__(self, *settings: str) -> None:
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="petsage-redis-"))
        server = shutil.which("redis-server")
        if server is None:
            raise RuntimeError("redis-server not found: install Debian's redis-server")
        self.process = subprocess.Popen(
            [server, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.root), "--enable-debug-command", "yes",
             *settings],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + START_TIMEOUT
        while not self._answers():
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise RuntimeError("redis-server did not start")
            time.sleep(0.02)

    def _answers(self) -> bool:
        import socket

        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as connection:
                connection.sendall(b"PING\r\n")
                return connection.recv(64).startswith((b"+PONG", b"-NOAUTH"))
        except OSError:
            return False

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def command(self, *args: str, password: str | None = None) -> Any:
        """One command on a connection of its own; its answer."""
        import redis

        client = redis.Redis(host="127.0.0.1", port=self.port, password=password, socket_timeout=10)
        try:
            return client.execute_command(*args)  # type: ignore[no-untyped-call]
        finally:
            client.close()

    def close(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
        shutil.rmtree(self.root, ignore_errors=True)
