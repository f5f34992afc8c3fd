"""Config: defaults, environment, flags, and the parsing of each value."""

from __future__ import annotations

from dataclasses import fields
from typing import Any

import pytest

from petsage_grpc.checks.spec import CheckSpec, parse_check_flag
from petsage_grpc.config import OPTIONS, Config, ConfigError, service_links
from petsage_grpc.values import parse_duration


def test_every_setting_has_one_option():
    assert [o.field for o in OPTIONS] == [f.name for f in fields(Config)]


def test_defaults_serve_every_interface_on_50051():
    config = Config.load({}, {})
    assert config.address == "0.0.0.0:50051"
    assert config.drain_delay == 0.5  # clients learn NOT_SERVING before the port closes
    assert config.grace_period == 10
    assert config.reflection is True


ENV = {"PETSAGE_PORT": "7000", "PETSAGE_HOST": "::1", "PETSAGE_REFLECTION": "false"}


def test_env_sets_values():
    config = Config.load({}, ENV)
    assert config.address == "[::1]:7000"
    assert config.reflection is False


def test_flags_win_over_env():
    config = Config.load({"port": 8000}, ENV)
    assert config.port == 8000
    assert config.address == "[::1]:8000"


def test_bad_env_value_names_the_variable():
    with pytest.raises(ConfigError, match="PETSAGE_GRACE_PERIOD"):
        Config.load({}, {"PETSAGE_GRACE_PERIOD": "ages"})


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("0", 0.0), ("2.5", 2.5), ("250ms", 0.25), ("1m30s", 90.0), ("1h", 3600.0), ("10s", 10.0)],
)
def test_durations_take_seconds_or_go_syntax(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "s", "5x", "-1", "1s-", "nan", "inf", "1 s"])
def test_bad_durations_are_refused(text):
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration(text)


def write(tmp_path, text: str) -> str:
    path = tmp_path / "petsage.toml"
    path.write_text(text)
    return str(path)


FILE = 'host = "127.0.0.1"\nport = 7000\ndrain_delay = "5s"\nreflection = false\n'


def test_file_sets_values(tmp_path):
    config = Config.load({"config": write(tmp_path, FILE)}, {})
    assert (config.host, config.port, config.drain_delay, config.reflection) == (
        "127.0.0.1",
        7000,
        5.0,
        False,
    )


def test_flags_win_over_env_which_wins_over_the_file(tmp_path):
    path = write(tmp_path, FILE)
    config = Config.load({"config": path, "port": 9000}, {"PETSAGE_DRAIN_DELAY": "1s"})
    assert (config.host, config.port, config.drain_delay, config.reflection) == (
        "127.0.0.1",
        9000,
        1.0,
        False,
    )


def test_file_named_by_env(tmp_path):
    path = write(tmp_path, "port = 7000\n")
    assert Config.load({}, {"PETSAGE_CONFIG": path}).port == 7000


def load_checks_from_every_source(tmp_path) -> Config:
    path = write(
        tmp_path,
        """
[[check]]
name = "db"
kind = "tcp"
target = "db.internal:5432"
interval = "5s"
timeout = 2
failure_threshold = 2
required = false

[[check]]
name = "peer"
kind = "grpc"
target = "dns:///peer:50051"
service = "petsage.v1.SmokeService"
""",
    )
    flag = CheckSpec(name="drain", kind="file", target="/tmp/drain")
    env = {
        "PETSAGE_CHECK": "name=cache,kind=tcp,target=localhost:6379;name=x,kind=http,target=http://x/"
    }
    return Config.load({"config": path, "checks": [flag]}, env)


def test_checks_from_every_source_add_up_in_order(tmp_path):
    config = load_checks_from_every_source(tmp_path)
    assert [c.name for c in config.checks] == ["db", "peer", "cache", "x", "drain"]


def test_check_settings_in_the_file_are_read(tmp_path):
    config = load_checks_from_every_source(tmp_path)
    db = config.checks[0]
    assert (db.interval, db.timeout, db.failure_threshold, db.required) == (5.0, 2.0, 2, False)
    assert config.checks[1].service == "petsage.v1.SmokeService"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("port = \n", "invalid TOML"),
        ("prot = 1\n", "prot: unknown key"),
        ("port = 99999\n", "port: invalid port"),
        ("port = [1]\n", "port: must be a single value"),
        (
            '[[check]]\nname = "a"\nkind = "smtp"\ntarget = "x"\n',
            "[[check]] #1 'a': kind: unknown kind 'smtp'",
        ),
        ('[[check]]\nname = "a"\nkind = "tcp"\n', "[[check]] #1 'a': target: is missing"),
        ('[[check]]\nname = "a"\nkind = "tcp"\ntarget = "nohost"\n', "target: must be host:port"),
        ('[[check]]\nname = "a"\nkind = "http"\ntarget = "x:1"\n', "target: must be an http"),
        (
            '[[check]]\nname = "a"\nkind = "tcp"\ntarget = "h:1"\ninterval = "soon"\n',
            "interval: invalid duration",
        ),
        (
            '[[check]]\nname = "a"\nkind = "tcp"\ntarget = "h:1"\nfailure_threshold = 0\n',
            "failure_threshold: must be",
        ),
        (
            '[[check]]\nname = "a"\nkind = "tcp"\ntarget = "h:1"\nrequired = "maybe"\n',
            "required: invalid boolean",
        ),
        (
            '[[check]]\nname = "a"\nkind = "tcp"\ntarget = "h:1"\ncolour = 1\n',
            "colour: unknown key",
        ),
        (
            '[[check]]\nname = "a"\nkind = "tcp"\ntarget = "h:1"\nservice = "s"\n',
            "service: is only for grpc",
        ),
        (
            '[[check]]\nname = "a"\nkind = "python"\ntarget = "nocolon"\n',
            "target: must be module:function",
        ),
        ("check = 1\n", "check: must be [[check]] tables"),
    ],
)
def test_bad_file_error_points_at_the_problem(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as error:
        Config.load({"config": path}, {})
    assert str(error.value).startswith(path + ": ")
    assert message in str(error.value)


def test_missing_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        Config.load({"config": str(tmp_path / "absent.toml")}, {})


def test_two_checks_with_one_name_are_refused():
    env = {"PETSAGE_CHECK": "name=a,kind=tcp,target=h:1;name=a,kind=tcp,target=h:2"}
    with pytest.raises(ConfigError, match="more than one check is named 'a'"):
        Config.load({}, env)


def test_check_flag_syntax():
    spec = parse_check_flag(
        "name=db, kind=tcp, target=localhost:5432, failure-threshold=5, required=no"
    )
    assert (spec.name, spec.kind, spec.target, spec.failure_threshold, spec.required) == (
        "db",
        "tcp",
        "localhost:5432",
        5,
        False,
    )


@pytest.mark.parametrize("text", ["db", "name=db", "name=db,kind=tcp,target=h:1,oops"])
def test_bad_check_flag_is_refused(text):
    with pytest.raises(ValueError, match="invalid check"):
        parse_check_flag(text)


@pytest.mark.parametrize("text", ["5_0051", "+80", " 8O", "٨٠", "1e3"])
def test_port_is_plain_digits(text):
    with pytest.raises(ConfigError, match="invalid port"):
        Config.load({}, {"PETSAGE_PORT": text})


def test_readme_documents_every_setting_variable():
    from tests.helpers import ROOT

    readme = (ROOT / "README.md").read_text()
    assert [option.env for option in OPTIONS if option.env not in readme] == []


def test_readme_documents_every_serve_flag():
    from petsage_grpc.cli import build_parser
    from tests.helpers import ROOT

    readme = (ROOT / "README.md").read_text()
    commands: Any = build_parser()._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    flags = [
        flag
        for action in commands["serve"]._actions
        for flag in action.option_strings
        if flag.startswith("--") and flag != "--help"
    ]
    assert "--no-access-log-health" in flags  # argparse's negative forms are read too
    assert [flag for flag in flags if f"`{flag}" not in readme] == []


@pytest.mark.parametrize(
    "variable", ["PETSAGE_MAX_WATCH_STREAMS", "PETSAGE_MAX_RECEIVE_MESSAGE_BYTES"]
)
def test_counts_past_what_grpc_holds_are_refused(variable):
    with pytest.raises(ConfigError, match=variable):
        Config.load({}, {variable: "3000000000"})


def test_kubernetes_service_link_in_a_variable_is_ignored():
    config = Config.load({}, {"PETSAGE_PORT": "tcp://10.96.0.12:50051", "PETSAGE_HOST": "::1"})
    assert (config.port, config.host) == (50051, "::1")


def test_service_links_are_named():
    environ = {"PETSAGE_PORT": "tcp://10.96.0.12:50051", "PETSAGE_ADMIN_PORT": "9090"}
    assert service_links(environ) == ["PETSAGE_PORT"]


def test_a_watch_send_timeout_of_zero_is_refused():
    with pytest.raises(ConfigError, match="--watch-send-timeout must be more than zero"):
        Config.load({}, {"PETSAGE_WATCH_SEND_TIMEOUT": "0"})
