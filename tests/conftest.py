from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest

from tests.helpers import CLIProcess, ThreadedServer


@pytest.fixture
def server() -> Iterator[ThreadedServer]:
    with ThreadedServer() as running:
        yield running


@pytest.fixture
def channel(server: ThreadedServer) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(server.address) as chan:
        yield chan


@pytest.fixture
def processes() -> Iterator[list[CLIProcess]]:
    """Subprocesses a test starts; any still running at the end are killed."""
    started: list[CLIProcess] = []
    yield started
    for process in started:
        process.kill()
