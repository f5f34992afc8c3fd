"""CheckSpec's keys, as a TOML table or a --check flag gives them, and what it refuses."""

from __future__ import annotations

from typing import Any

import pytest

from petsage_grpc.checks.spec import (
    CheckSpec,
    SpecError,
    parse_check_flag,
    parse_free_space,
    parse_status_ranges,
    spec_from_mapping,
)

POSTGRES: dict[str, Any] = {"name": "db", "kind": "postgres", "target": "127.0.0.1:5432"}


def test_postgres_keys_from_a_table():
    spec = spec_from_mapping(
        {**POSTGRES, "user": "app", "password": "env:PGPASSWORD", "database": "pets",
         "sslmode": "verify-full", "read_write": True, "query": "SELECT 2"}
    )  # fmt: skip
    assert (spec.user, spec.database, spec.sslmode, spec.read_write, spec.query) == (
        "app",
        "pets",
        "verify-full",
        True,
        "SELECT 2",
    )


@pytest.mark.parametrize("password", ["s3cret", "env", "ENV:X"])
def test_password_in_clear_is_refused(password):
    with pytest.raises(SpecError, match="password: give it as env:VARIABLE or file:PATH"):
        CheckSpec(**POSTGRES, password=password)


def test_dsn_with_a_password_is_refused():
    with pytest.raises(SpecError, match="must not carry a password"):
        CheckSpec(name="db", kind="postgres", target="postgresql://app:s3cret@db/pets")


def test_dsn_without_a_password_is_a_target():
    spec = CheckSpec(name="db", kind="postgres", target="postgresql://app@db:5432/pets")
    assert spec.target == "postgresql://app@db:5432/pets"


def test_redis_database_is_a_number():
    assert spec_from_mapping({"name": "c", "kind": "redis", "target": "r:6379", "database": 3})
    with pytest.raises(SpecError, match="database: must be a database number"):
        CheckSpec(name="c", kind="redis", target="r:6379", database="three")


def test_redis_role_is_master_or_replica():
    with pytest.raises(SpecError, match="role: must be master or replica"):
        CheckSpec(name="c", kind="redis", target="r:6379", role="primary")


def test_key_of_another_kind_is_refused():
    with pytest.raises(SpecError, match="read_write: is only for postgres checks"):
        CheckSpec(name="c", kind="redis", target="r:6379", read_write=True)


def test_disk_needs_min_free():
    with pytest.raises(SpecError, match="min_free: is missing"):
        CheckSpec(name="d", kind="disk", target="/data")


@pytest.mark.parametrize(
    ("text", "value"),
    [("10%", ("percent", 10.0)), ("500MiB", ("bytes", 500 * 2**20)), ("2GB", ("bytes", 2e9)),
     ("1048576", ("bytes", 1048576.0))],
)  # fmt: skip
def test_free_space_settings(text, value):
    assert parse_free_space(text) == value


@pytest.mark.parametrize("text", ["0%", "100%", "-1GB", "lots", "5 parsecs"])
def test_bad_free_space_is_refused(text):
    with pytest.raises(ValueError, match="invalid"):
        parse_free_space(text)


def test_flag_gives_the_password_as_a_reference():
    spec = parse_check_flag("name=db,kind=postgres,target=db:5432,password=file:/run/pg/pass")
    assert spec.password == "file:/run/pg/pass"


def test_flag_error_does_not_echo_a_url_password():
    with pytest.raises(ValueError) as refused:
        parse_check_flag("name=db,kind=postgres,target=postgresql://app:s3cret@db/pets")
    assert "s3cret" not in str(refused.value)


def test_flag_lists_are_separated_by_bars():
    spec = parse_check_flag("name=a,kind=tcp,target=h:1,services=a.B|c.D")
    assert spec.services == ("a.B", "c.D")


@pytest.mark.parametrize(
    ("value", "ranges"),
    [(200, ((200, 200),)), ("2xx", ((200, 299),)), ("200-204|301", ((200, 204), (301, 301))),
     ([200, "3xx"], ((200, 200), (300, 399)))],
)  # fmt: skip
def test_expect_status_forms(value, ranges):
    assert parse_status_ranges(value) == ranges


def test_threshold_must_be_whole():
    with pytest.raises(SpecError, match="failure_threshold: must be a whole number"):
        spec_from_mapping({**POSTGRES, "failure_threshold": 2.5})
