"""Config: defaults, environment, flags, and the parsing of each value."""

from __future__ import annotations

from dataclasses import fields

import pytest

from petsage_grpc.config import OPTIONS, Config, ConfigError
from petsage_grpc.values import parse_duration


def test_every_setting_has_one_option():
    assert [o.field for o in OPTIONS] == [f.name for f in fields(Config)]


def test_defaults_serve_every_interface_on_50051():
    config = Config.load({}, {})
    assert config.address == "0.0.0.0:50051"
    assert config.drain_delay == 0
    assert config.grace_period == 10
    assert config.reflection is True


def test_env_sets_values_and_flags_win():
    env = {"PETSAGE_PORT": "7000", "PETSAGE_HOST": "::1", "PETSAGE_REFLECTION": "false"}
    config = Config.load({"port": 8000}, env)
    assert config.port == 8000
    assert config.address == "[::1]:8000"
    assert config.reflection is False


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
