"""Checkers of the data stores the PetSage platform runs on, each on its own well-kept asyncio
client, an optional extra imported only when such a check runs:

- `postgres` on asyncpg (`petsage-grpc[postgres]`): logs in, runs a query (default `SELECT 1`)
  and, with `read_write`, fails on a read-only server. asyncpg speaks the protocol itself (no
  libpq), is asyncio-native, and cancels a query that outlives its timeout on the server.
- `redis` on redis-py's asyncio client (`petsage-grpc[redis]`): PING, and with `role` the
  server's ROLE.

Each keeps one connection between runs (a health check must not open a connection every
interval against a server with a small connection limit), replaces it when it breaks or a run
fails, and closes it at stop. Passwords come from `env:` or `file:` references only, and never
reach an error: errors are words (`authentication failed`, `timed out`, `server is read-only`).
"""

from __future__ import annotations

import contextlib
import importlib.util
import ssl
import time
from typing import Any

from petsage_grpc.checks.base import CheckFailed, read_secret, words
from petsage_grpc.checks.spec import EXTRAS, CheckSpec, SpecError
from petsage_grpc.values import split_host_port

QUERY_MARGIN = 0.05
"""Seconds kept back from the timeout so that the driver's own timeout cancels a slow query on
the server (the runner's would only drop the connection, and leave the query running)."""


def require_extra(kind: str) -> None:
    """Raise SpecError saying which extra to install when `kind`'s client library is missing."""
    module, extra = EXTRAS[kind]
    try:
        found = importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        found = False
    if not found:
        raise SpecError(
            "kind", f"{kind} checks need the {extra} extra: pip install 'petsage-grpc[{extra}]'"
        )


def _ssl_context(spec: CheckSpec, verify_name: bool) -> ssl.SSLContext:
    try:
        context = ssl.create_default_context(cafile=spec.tls_ca or None)
        if spec.tls_cert:
            context.load_cert_chain(spec.tls_cert, spec.tls_key)
    except (OSError, ssl.SSLError) as exc:
        raise SpecError("tls_ca", f"cannot use the TLS files: {exc}") from None
    context.check_hostname = verify_name
    return context


class PostgresChecker:
    """Passes when a login and the query succeed within the timeout (and, with `read_write`,
    the server accepts writes)."""

    def __init__(self, spec: CheckSpec) -> None:
        require_extra("postgres")
        assert isinstance(spec.target, str)
        self._spec = spec
        # Named, so that operators can tell the check's one connection in pg_stat_activity.
        self._connect: dict[str, Any] = {"server_settings": {"application_name": "petsage-grpc"}}
        if "://" in spec.target:
            self._connect["dsn"] = spec.target
        else:
            self._connect["host"], self._connect["port"] = split_host_port(spec.target)
        if spec.user:
            self._connect["user"] = spec.user
        if spec.database:
            self._connect["database"] = spec.database
        if spec.password:
            self._connect["password"] = read_secret(spec.password, "password")
        if spec.tls_ca or spec.tls_cert:
            if spec.sslmode in ("disable", "allow", "prefer"):
                raise SpecError("sslmode", "tls_ca and tls_cert want require or verify-*")
            self._connect["ssl"] = _ssl_context(spec, spec.sslmode != "verify-ca")
        elif spec.sslmode:
            self._connect["ssl"] = spec.sslmode
        self._connection: Any = None

    async def run(self) -> None:
        import asyncpg  # here: servers without postgres checks never load it

        started = time.monotonic()
        try:
            if self._connection is None or self._connection.is_closed():
                self._connection = None
                self._connection = await asyncpg.connect(
                    **self._connect, timeout=self._spec.timeout, command_timeout=None
                )
            left = self._spec.timeout - (time.monotonic() - started) - QUERY_MARGIN
            timeout = max(left, 0.001)
            await self._connection.fetch(self._spec.query, timeout=timeout)
            if self._spec.read_write:
                standby, read_only = await self._connection.fetchrow(
                    "SELECT pg_is_in_recovery(), current_setting('transaction_read_only')",
                    timeout=timeout,
                )
                if standby:
                    raise CheckFailed("server is read-only (in recovery: a standby)")
                if read_only == "on":
                    raise CheckFailed("server is read-only (transaction_read_only)")
        except CheckFailed:
            raise
        except asyncpg.PostgresError as exc:
            self._drop_if_broken()
            raise CheckFailed(_postgres_words(exc)) from exc
        except TimeoutError as exc:
            # asyncpg cancels the query on the server (a CancelRequest on a connection of its
            # own) and keeps the connection usable: dropping it now would abort that cancel
            # and leave the query running.
            raise CheckFailed("timed out") from exc
        except Exception as exc:
            self._drop()
            raise CheckFailed(_postgres_words(exc)) from exc
        except BaseException:  # cancelled mid-run: the connection's state is unknown
            self._drop()
            raise

    def _drop_if_broken(self) -> None:
        connection = self._connection
        if connection is not None and (connection.is_closed() or connection.is_in_transaction()):
            self._drop()

    def _drop(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.terminate()

    async def close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            try:
                await connection.close(timeout=1.0)
            except Exception:
                connection.terminate()


def _postgres_words(error: BaseException) -> str:
    """A PostgreSQL failure in words: its kind, never the server's message (it can quote
    names) nor the connection's host."""
    name = type(error).__name__
    return {
        "InvalidPasswordError": "authentication failed",
        "InvalidAuthorizationSpecificationError": "authentication failed",
        "TooManyConnectionsError": "too many connections",
        "CannotConnectNowError": "server is starting up or shutting down",
        "QueryCanceledError": "timed out",
        "InvalidCatalogNameError": "no such database",
        "ConnectionDoesNotExistError": "connection lost",
        "InterfaceError": "connection lost",
        "ReadOnlySQLTransactionError": "server is read-only",
        "AdminShutdownError": "server shut down",
    }.get(name) or (f"query failed ({name})" if hasattr(error, "sqlstate") else words(error))


class RedisChecker:
    """Passes when PING answers PONG within the timeout (and, with `role`, ROLE says so)."""

    def __init__(self, spec: CheckSpec) -> None:
        require_extra("redis")
        assert isinstance(spec.target, str)
        self._spec = spec
        self._settings: dict[str, Any] = {
            "socket_timeout": spec.timeout,
            "socket_connect_timeout": spec.timeout,
            "single_connection_client": True,  # one connection, kept between runs
        }
        if spec.user:
            self._settings["username"] = spec.user
        if spec.password:
            self._settings["password"] = read_secret(spec.password, "password")
        if spec.database:
            self._settings["db"] = int(spec.database)
        if spec.tls:
            self._settings.update(
                ssl=True,
                ssl_ca_certs=spec.tls_ca or None,
                ssl_certfile=spec.tls_cert or None,
                ssl_keyfile=spec.tls_key or None,
            )
        self._client: Any = None

    def _make_client(self) -> Any:
        import redis.asyncio  # here: servers without redis checks never load it
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        # No retries: a health check reports what it sees; its interval is the retry.
        self._settings["retry"] = Retry(NoBackoff(), 0)

        target = self._spec.target
        assert isinstance(target, str)
        if "://" in target:
            return redis.asyncio.Redis.from_url(target, **self._settings)
        host, port = split_host_port(target)
        return redis.asyncio.Redis(host=host, port=port, **self._settings)

    async def run(self) -> None:
        import redis.exceptions

        if self._client is None:
            self._client = self._make_client()
        try:
            if await self._client.ping() is not True:
                raise CheckFailed("PING did not answer PONG")
            if self._spec.role:
                role = await self._client.execute_command("ROLE")
                name = role[0].decode() if isinstance(role[0], bytes) else str(role[0])
                wanted = ("slave", "replica") if self._spec.role == "replica" else ("master",)
                if name not in wanted:
                    raise CheckFailed(f"server is a {name}, not a {self._spec.role}")
        except CheckFailed:
            raise
        except BaseException as exc:
            await self._drop()  # its connection may be mid-reply: never reuse it
            if isinstance(exc, redis.exceptions.RedisError):
                raise CheckFailed(_redis_words(exc, bool(self._spec.password))) from exc
            raise

    async def _drop(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(Exception):  # a broken connection: nothing to close
                await client.aclose()

    async def close(self) -> None:
        await self._drop()


def _redis_words(error: BaseException, with_password: bool) -> str:
    name = type(error).__name__
    text = str(error)
    if name in ("AuthenticationError", "AuthenticationWrongNumberOfArgsError"):
        return "authentication failed" if with_password else "authentication required"
    if text.startswith(("NOAUTH", "WRONGPASS")):
        return (
            "authentication failed" if text.startswith("WRONGPASS") else "authentication required"
        )
    if name == "TimeoutError":
        return "timed out"
    if name == "ConnectionError":
        cause = words(error)
        return cause if cause not in ("ConnectionError", "cannot connect") else "connection lost"
    if text.startswith("LOADING"):
        return "server is loading its data"
    return f"command failed ({name})"
