"""postgres, redis and disk checks, each against the real thing on 127.0.0.1."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from petsage_grpc._gen.petsage.v1 import smoke_pb2, smoke_pb2_grpc
from petsage_grpc.checks.checkers import format_bytes
from petsage_grpc.checks.runner import CheckRunner
from petsage_grpc.checks.spec import CheckSpec
from tests.apps.stores import APP_DATABASE, APP_PASSWORD, APP_USER, Postgres, Redis
from tests.helpers import WAIT, ThreadedServer, make_config, wait_until

FAST: dict[str, Any] = {"interval": 0.1, "timeout": 0.5, "failure_threshold": 1}


@pytest.fixture(scope="module")
def postgres() -> Iterator[Postgres]:
    server = Postgres(max_connections=10)
    yield server
    server.close()


@pytest.fixture
def app_password(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("PG_PASSWORD", APP_PASSWORD)
    return "env:PG_PASSWORD"


def postgres_check(postgres: Postgres, password: str, **settings: Any) -> CheckSpec:
    values: dict[str, Any] = {"user": APP_USER, "database": APP_DATABASE, "password": password}
    values.update(FAST)
    values.update(settings)
    return CheckSpec(name="db", kind="postgres", target=postgres.target, **values)


class Checking:
    """A PetSage server running one check, and the check's runner."""

    def __init__(self, spec: CheckSpec) -> None:
        self.server = ThreadedServer(make_config(checks=(spec,)))

    def __enter__(self) -> Checking:
        self.server.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.__exit__(*exc)

    @property
    def runner(self) -> CheckRunner:
        return self.server.server.monitor.runners[0]

    def smoke(self) -> smoke_pb2.SmokeTestResponse:
        with grpc.insecure_channel(self.server.address) as channel:
            response: smoke_pb2.SmokeTestResponse = smoke_pb2_grpc.SmokeServiceStub(
                channel
            ).SmokeTest(smoke_pb2.SmokeTestRequest(), timeout=WAIT)
            return response

    def wait_passing(self, passing: bool = True) -> None:
        wait_until(lambda: self.runner.is_passing() is passing, what=f"passing={passing}")

    def wait_error(self, error: str) -> None:
        wait_until(lambda: self.runner.last_error == error, what=repr(error))


def our_backends(postgres: Postgres) -> list[int]:
    rows = postgres.sql("SELECT pid FROM pg_stat_activity WHERE application_name = 'petsage-grpc'")
    return [row["pid"] for row in rows]


# --- postgres ---------------------------------------------------------------------------------


def test_postgres_healthy_passes(postgres, app_password):
    with Checking(postgres_check(postgres, app_password)) as checking:
        checking.wait_passing()
        result = checking.smoke().checks[0]
    assert (result.kind, result.passing, result.last_error) == ("postgres", True, "")


def test_postgres_keeps_one_connection_between_runs(postgres, app_password):
    with Checking(postgres_check(postgres, app_password)) as checking:
        checking.wait_passing()
        first = our_backends(postgres)
        wait_until(lambda: checking.runner.last_run_time is not None, what="a run")
        runs = checking.runner.last_run_time
        wait_until(lambda: checking.runner.last_run_time != runs, what="another run")
        assert our_backends(postgres) == first
    assert len(first) == 1
    wait_until(lambda: our_backends(postgres) == [], what="the connection closed at stop")


def test_postgres_wrong_password_says_authentication_failed(postgres, monkeypatch):
    monkeypatch.setenv("PG_PASSWORD", "not-the-password")
    with Checking(postgres_check(postgres, "env:PG_PASSWORD")) as checking:
        checking.wait_error("authentication failed")
        shown = str(checking.smoke())
    assert "not-the-password" not in shown


def test_postgres_password_from_a_file(postgres, tmp_path: Path):
    (tmp_path / "password").write_text(APP_PASSWORD + "\n")  # as a secret volume holds it
    with Checking(postgres_check(postgres, f"file:{tmp_path}/password")) as checking:
        checking.wait_passing()


def test_postgres_stopped_fails_then_recovers_on_a_new_connection(postgres, app_password):
    with Checking(postgres_check(postgres, app_password)) as checking:
        checking.wait_passing()
        before = our_backends(postgres)
        postgres.stop()
        try:
            checking.wait_passing(False)
        finally:
            postgres.start()
        checking.wait_passing()
        after = our_backends(postgres)
    assert len(after) == 1 and after != before


def test_postgres_query_past_the_timeout_is_cancelled_on_the_server(postgres, app_password):
    spec = postgres_check(postgres, app_password, query="SELECT pg_sleep(5)", interval=3600.0)
    with Checking(spec) as checking:
        checking.wait_error("timed out")
        active = (
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE query = 'SELECT pg_sleep(5)' AND state = 'active'"
        )
        # Well before the 5 s sleep would end by itself:
        wait_until(lambda: postgres.sql(active)[0][0] == 0, timeout=3.0, what="the cancel")


def test_postgres_read_write_fails_on_a_read_only_database(postgres, app_password):
    spec = postgres_check(postgres, app_password, database="readonly", read_write=True)
    with Checking(spec) as checking:
        checking.wait_error("server is read-only (transaction_read_only)")


def test_postgres_read_only_database_passes_without_read_write(postgres, app_password):
    with Checking(postgres_check(postgres, app_password, database="readonly")) as checking:
        checking.wait_passing()


def test_postgres_full_of_connections_keeps_our_kept_one_passing(postgres, app_password):
    import asyncio

    import asyncpg

    with Checking(postgres_check(postgres, app_password)) as checking:
        checking.wait_passing()
        stop = threading.Event()
        filled = threading.Event()

        async def hog() -> None:  # take every slot left to ordinary users
            held = []
            while True:
                try:
                    held.append(
                        await asyncpg.connect(
                            host="127.0.0.1",
                            port=postgres.port,
                            user=APP_USER,
                            password=APP_PASSWORD,
                            database=APP_DATABASE,
                        )
                    )
                except asyncpg.TooManyConnectionsError:
                    break
            filled.set()
            await asyncio.to_thread(stop.wait, WAIT * 3)  # held until the test is done
            for connection in held:
                await connection.close()

        hogging = threading.Thread(target=asyncio.run, args=(hog(),))
        hogging.start()
        try:
            assert filled.wait(WAIT)
            runs = checking.runner.last_run_time
            wait_until(lambda: checking.runner.last_run_time != runs, what="a run while full")
            assert checking.runner.is_passing()
            with Checking(postgres_check(postgres, app_password)) as newcomer:
                newcomer.wait_error("too many connections")
        finally:
            stop.set()
            hogging.join(WAIT)


# --- redis ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def redis_server() -> Iterator[Redis]:
    server = Redis()
    yield server
    server.close()


def redis_check(redis: Redis, **settings: Any) -> CheckSpec:
    values: dict[str, Any] = dict(FAST)
    values.update(settings)
    return CheckSpec(name="cache", kind="redis", target=redis.target, **values)


def test_redis_ping_passes(redis_server):
    with Checking(redis_check(redis_server)) as checking:
        checking.wait_passing()


def test_redis_debug_sleep_past_the_timeout_fails_then_recovers(redis_server):
    with Checking(redis_check(redis_server)) as checking:
        checking.wait_passing()
        sleeper = threading.Thread(target=redis_server.command, args=("DEBUG", "SLEEP", "2"))
        sleeper.start()
        try:
            wait_until(lambda: checking.runner.last_error.startswith("timed out"), what="it")
        finally:
            sleeper.join(WAIT)
        checking.wait_passing()


def test_redis_client_kill_of_our_connection_recovers(redis_server):
    with Checking(redis_check(redis_server, interval=0.2)) as checking:
        checking.wait_passing()
        killed = redis_server.command("CLIENT", "KILL", "SKIPME", "yes", "TYPE", "normal")
        assert killed >= 1
        runs = checking.runner.last_run_time
        wait_until(lambda: checking.runner.last_run_time != runs, what="a run after the kill")
        checking.wait_passing()
        clients = redis_server.command("CLIENT", "LIST").decode()
    assert len(clients.splitlines()) == 2  # ours, anew, and the one asking


def test_redis_role_master_fails_on_a_replica(redis_server):
    replica = Redis("--replicaof", "127.0.0.1", str(redis_server.port))
    try:
        with Checking(redis_check(replica, role="master")) as checking:
            checking.wait_error("server is a slave, not a master")
    finally:
        replica.close()


def test_redis_role_master_passes_on_the_master(redis_server):
    with Checking(redis_check(redis_server, role="master")) as checking:
        checking.wait_passing()


@pytest.fixture(scope="module")
def guarded_redis() -> Iterator[Redis]:
    server = Redis("--requirepass", "cache-s3cret")
    yield server
    server.close()


def test_redis_without_the_password_needs_authentication(guarded_redis):
    with Checking(redis_check(guarded_redis)) as checking:
        checking.wait_error("authentication required")


def test_redis_wrong_password_fails_without_showing_it(guarded_redis, monkeypatch):
    monkeypatch.setenv("REDIS_PASSWORD", "wrong-s3cret")
    with Checking(redis_check(guarded_redis, password="env:REDIS_PASSWORD")) as checking:
        checking.wait_error("authentication failed")
        assert "wrong-s3cret" not in str(checking.smoke())


def test_redis_password_from_a_file_passes(guarded_redis, tmp_path: Path):
    (tmp_path / "password").write_text("cache-s3cret")
    spec = redis_check(guarded_redis, password=f"file:{tmp_path}/password", database="2")
    with Checking(spec) as checking:
        checking.wait_passing()


# --- disk -------------------------------------------------------------------------------------


def test_disk_with_enough_free_space_passes(tmp_path: Path):
    spec = CheckSpec(name="disk", kind="disk", target=str(tmp_path), min_free="1B", **FAST)
    with Checking(spec) as checking:
        checking.wait_passing()


def test_disk_below_the_threshold_fails_without_naming_the_path(tmp_path: Path):
    stats = os.statvfs(tmp_path)
    free = stats.f_bavail * stats.f_frsize
    wanted = f"{free // 2**20 + 2**20}MiB"  # a TiB more than there is
    spec = CheckSpec(name="disk", kind="disk", target=str(tmp_path), min_free=wanted, **FAST)
    with Checking(spec) as checking:
        wait_until(lambda: "free, less than" in checking.runner.last_error, what="the failure")
        error = checking.runner.last_error
    assert error.endswith(f"free, less than {wanted}")
    assert str(tmp_path) not in error


def test_disk_share_below_the_threshold_fails(tmp_path: Path):
    spec = CheckSpec(name="disk", kind="disk", target=str(tmp_path), min_free="99.999%", **FAST)
    with Checking(spec) as checking:
        wait_until(lambda: "% free, less than 99.999%" in checking.runner.last_error, what="it")


@pytest.mark.parametrize(
    ("count", "text"), [(512, "512 B"), (1536, "1.5 KiB"), (3 * 2**30, "3.0 GiB")]
)
def test_format_bytes(count, text):
    assert format_bytes(count) == text


# --- the extras -------------------------------------------------------------------------------


@pytest.mark.parametrize(("kind", "module"), [("postgres", "asyncpg"), ("redis", "redis")])
def test_missing_extra_is_one_line_naming_it(kind, module):
    code = (
        f"import sys; sys.modules[{module!r}] = None; sys.argv[0] = 'petsage-grpc'; "
        "from petsage_grpc.cli import run; run()"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, "serve", "--port", "0",
         "--check", f"name=x,kind={kind},target=127.0.0.1:1"],
        capture_output=True, text=True, timeout=WAIT, check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"petsage-grpc: error: check 'x': kind: {kind} checks need the {kind} extra: "
        f"pip install 'petsage-grpc[{kind}]'"
    ]


def test_server_without_datastore_checks_loads_no_driver():
    code = (
        "import sys; from petsage_grpc.config import Config; from petsage_grpc.server import "
        "Server; Server(Config()); print('asyncpg' in sys.modules, 'redis' in sys.modules)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=WAIT, check=True
    )
    assert result.stdout.split() == ["False", "False"]
