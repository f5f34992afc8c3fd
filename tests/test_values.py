"""The value helpers shared by settings, checks and client commands."""

from __future__ import annotations

import pytest

from petsage_grpc.values import first_and_more, format_seconds, split_host_port


@pytest.mark.parametrize(
    ("text", "parts"),
    [
        ("localhost:50051", ("localhost", 50051)),
        ("10.0.0.5:5432", ("10.0.0.5", 5432)),
        ("[::1]:80", ("::1", 80)),
        ("[fe80::1%eth0]:80", ("fe80::1%eth0", 80)),
    ],
)
def test_split_host_port(text, parts):
    assert split_host_port(text) == parts


@pytest.mark.parametrize("text", ["localhost", ":80", "host:", "host:http", "host:70000", "h:٨٠"])
def test_split_host_port_refuses_anything_else(text):
    with pytest.raises(ValueError, match="want host:port"):
        split_host_port(text)


@pytest.mark.parametrize(("seconds", "text"), [(10.0, "10s"), (0.5, "0.5s"), (90, "90s")])
def test_format_seconds(seconds, text):
    assert format_seconds(seconds) == text


def test_first_and_more_counts_the_rest():
    assert first_and_more(["a", "b", "c"]) == "a (and 2 more)"


def test_first_and_more_of_one_is_that_one():
    assert first_and_more(["a"]) == "a"


def test_first_and_more_of_none_is_empty():
    assert first_and_more([]) == ""
