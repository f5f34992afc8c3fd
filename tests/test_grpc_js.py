"""A client in another language that nobody here wrote: @grpc/grpc-js (installed from npm by
this test with the machine's node and npm) calls Check, Watch and List against PetSage."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import descriptor_pb2
from grpc_health.v1 import health_pb2

from tests.helpers import ThreadedServer

JS = Path(__file__).parent / "js"
NODE, NPM = shutil.which("node"), shutil.which("npm")

assert NODE and NPM, "node and npm are missing: make test installs Debian's nodejs and npm"


@pytest.fixture(scope="module")
def client_js() -> Path:
    assert NPM is not None
    if not (JS / "node_modules" / "@grpc" / "grpc-js").is_dir():
        subprocess.run(
            [NPM, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=JS,
            check=True,
            timeout=300,
            capture_output=True,
        )
    return JS / "client.js"


@pytest.fixture(scope="module")
def descriptor_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """grpc.health.v1 as the health stubs we serve it from define it, for proto-loader."""
    file = descriptor_pb2.FileDescriptorProto()
    health_pb2.DESCRIPTOR.CopyToProto(file)
    path = tmp_path_factory.mktemp("proto") / "health.protoset"
    path.write_bytes(descriptor_pb2.FileDescriptorSet(file=[file]).SerializeToString())
    return path


@pytest.fixture(scope="module")
def answers(client_js: Path, descriptor_set: Path) -> dict[str, Any]:
    """What client.js got from Check, Watch and List (and of an unknown service) against a
    server with one service NOT_SERVING."""
    assert NODE is not None
    with ThreadedServer() as server:
        server.server.monitor.set(
            "petsage.v1.SmokeService", health_pb2.HealthCheckResponse.NOT_SERVING
        )
        result = subprocess.run(
            [NODE, str(client_js), server.address, str(descriptor_set)],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
    answers: dict[str, Any] = json.loads(result.stdout)
    return answers


def test_grpc_js_can_check(answers):
    assert answers["check"] == {"status": "SERVING"}
    assert answers["checkUnknown"] == {"code": "NOT_FOUND"}


def test_grpc_js_can_watch(answers):
    assert answers["watch"] == "SERVING"
    assert answers["watchUnknown"] == "SERVICE_UNKNOWN"


def test_grpc_js_can_list(answers):
    listed = answers["list"]["statuses"]  # a map, or its entries, as proto-loader reads it
    if isinstance(listed, list):
        listed = {entry["key"]: entry["value"] for entry in listed}
    statuses = {name: response["status"] for name, response in listed.items()}
    assert statuses == {
        "": "SERVING",
        "liveness": "SERVING",
        "readiness": "SERVING",
        "petsage.v1.SmokeService": "NOT_SERVING",
    }
