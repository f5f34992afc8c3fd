"""The container image, built from the Dockerfile with podman (deploy/image.py) and run as an
orchestrator runs it: read-only root file system (no tmpfs either), as its own non-root user,
every capability dropped, its ports published on 127.0.0.1 only. Each check talks to it from this
machine, as a load balancer, the container engine or a deployment pipeline would."""

from __future__ import annotations

import http.client
import importlib.util
import itertools
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator, Sequence
from types import ModuleType
from typing import Any

import grpc
import pytest
from packaging.markers import Marker
from packaging.requirements import Requirement

from tests.helpers import ROOT, WAIT, check, free_port, statuses_until, wait_until, watch

# The first build on a machine makes the stand-in base image (about a minute); later ones reuse
# podman's layers and take seconds.
pytestmark = pytest.mark.timeout(600)

SERVING, NOT_SERVING = 1, 2
PODMAN_TIMEOUT = 60.0
_names = itertools.count()


def load_builder() -> ModuleType:
    spec = importlib.util.spec_from_file_location("image", ROOT / "deploy" / "image.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


builder = load_builder()


def podman(*args: str, timeout: float = PODMAN_TIMEOUT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["podman", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        check=False,
    )


@pytest.fixture(scope="module")
def image() -> str:
    """The image of this tree, built now (podman's layer cache keeps an unchanged tree quick)."""
    if shutil.which("podman") is None:
        pytest.fail(
            "podman is not installed: make image-tools installs it "
            "(apt-get install -y --no-install-recommends podman runc mmdebstrap)",
            pytrace=False,
        )
    try:
        tag: str = builder.build()
    except builder.ImageError as exc:
        pytest.fail(f"the image cannot be built: {exc}", pytrace=False)
    return tag


class Container:
    """One container of the image, started detached; its ports on free ports of 127.0.0.1."""

    def __init__(
        self,
        image: str,
        args: Sequence[str] = (),
        env: dict[str, str] | None = None,
        ports: Sequence[int] = (50051,),
    ) -> None:
        self.name = f"petsage-grpc-test-{os.getpid()}-{next(_names)}"
        self.ports = {port: free_port() for port in ports}
        published = [f"--publish=127.0.0.1:{host}:{port}" for port, host in self.ports.items()]
        started = podman(
            "run",
            "--detach",
            f"--name={self.name}",
            "--read-only",
            "--read-only-tmpfs=false",
            "--cap-drop=ALL",
            "--security-opt=no-new-privileges",
            *published,
            *(f"--env={name}={value}" for name, value in (env or {}).items()),
            image,
            *args,
        )
        lines = started.stderr.strip().splitlines()
        assert started.returncode == 0, f"podman run fails: {lines[-1] if lines else '?'}"

    def address(self, port: int = 50051) -> str:
        return f"127.0.0.1:{self.ports[port]}"

    def wait_serving(self, port: int = 50051) -> grpc.Channel:
        """A channel to the container's port, once health says SERVING through it."""
        channel = grpc.insecure_channel(self.address(port))

        def serving() -> bool:
            try:
                return check(channel) == SERVING
            except grpc.RpcError:
                return False

        wait_until(serving, what=f"{self.name} to serve on {port}")
        return channel

    def healthcheck(self) -> int:
        """The image's own HEALTHCHECK, run once as the engine runs it: its exit code."""
        return podman("healthcheck", "run", self.name).returncode

    def exec(self, *command: str) -> subprocess.CompletedProcess[str]:
        return podman("exec", self.name, *command)

    def inspect(self, template: str) -> str:
        return podman("inspect", "--format", template, self.name).stdout.strip()

    def remove(self) -> None:
        podman("rm", "--force", "--time=0", self.name)


@pytest.fixture(scope="module")
def container(image: str) -> Iterator[Container]:
    """The image as it ships (`serve`), with the admin port opened to the pod's network."""
    running = Container(
        image,
        env={"PETSAGE_ADMIN_PORT": "9090", "PETSAGE_ADMIN_HOST": "0.0.0.0"},
        ports=(50051, 9090),
    )
    yield running
    running.remove()


@pytest.fixture
def containers() -> Iterator[list[Container]]:
    started: list[Container] = []
    yield started
    for each in started:
        each.remove()


def test_health_check_from_the_host_is_serving(container):
    with container.wait_serving() as channel:
        assert check(channel, "liveness") == SERVING
        assert check(channel, "readiness") == SERVING


def test_own_healthcheck_is_healthy(container):
    container.wait_serving().close()
    assert container.healthcheck() == 0


def test_healthcheck_follows_a_port_given_as_a_flag(image, containers):
    flagged = Container(image, ["serve", "--port", "50777"], ports=(50777,))
    containers.append(flagged)
    flagged.wait_serving(50777).close()
    assert flagged.healthcheck() == 0


def test_server_runs_as_the_non_root_user(container):
    container.wait_serving().close()
    status = container.exec("cat", "/proc/1/status").stdout
    uids = next(line.split()[1:] for line in status.splitlines() if line.startswith("Uid:"))
    assert uids == ["10001"] * 4
    assert container.exec("id", "-un").stdout.strip() == "petsage"


def test_root_file_system_is_read_only_and_the_address_file_is_in_dev_shm(container):
    container.wait_serving().close()
    written = container.exec("touch", "/opt/petsage/x")
    assert written.returncode != 0 and "Read-only file system" in written.stderr
    listeners = json.loads(container.exec("cat", "/dev/shm/petsage-grpc.json").stdout)["listeners"]
    assert listeners["main"] == {"host": "0.0.0.0", "port": 50051, "security": "plaintext"}


def test_admin_status_endpoint_answers_on_the_admin_port(container):
    container.wait_serving().close()
    connection = http.client.HTTPConnection("127.0.0.1", container.ports[9090], timeout=WAIT)
    try:
        connection.request("GET", "/api/v1/status")
        response = connection.getresponse()
        body = json.loads(response.read())
    finally:
        connection.close()
    assert response.status == 200
    assert body["status"] == "ok"
    assert body["version"] == builder.version()


def test_stop_drains_as_not_serving_then_exits_zero(image, containers):
    stopped = Container(image, env={"PETSAGE_DRAIN_DELAY": "4s"})
    containers.append(stopped)
    with stopped.wait_serving() as channel:
        stream = watch(channel, "liveness", timeout=WAIT * 2)
        assert next(stream).status == SERVING
        stopping = subprocess.Popen(
            ["podman", "stop", "--time=30", stopped.name],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            assert statuses_until(stream, NOT_SERVING)[-1] == NOT_SERVING
            assert check(channel) == NOT_SERVING  # the drain delay: still answering
            assert stopping.wait(timeout=WAIT * 3) == 0
        finally:
            if stopping.poll() is None:
                stopping.kill()
    assert stopped.inspect("{{.State.ExitCode}}") == "0"
    logs = podman("logs", stopped.name).stderr
    assert "received SIGTERM: shutting down" in logs
    assert "draining: NOT_SERVING for 4s before stopping" in logs


def test_healthcheck_is_unhealthy_while_draining(image, containers):
    draining = Container(image, env={"PETSAGE_DRAIN_DELAY": "4s"})
    containers.append(draining)
    with draining.wait_serving() as channel:
        stream = watch(channel, "liveness", timeout=WAIT * 2)
        assert next(stream).status == SERVING
        # A signal, not podman stop: podman runs no healthcheck of a container it is stopping.
        assert podman("kill", "--signal=TERM", draining.name).returncode == 0
        assert statuses_until(stream, NOT_SERVING)[-1] == NOT_SERVING
        assert draining.healthcheck() == 1


def test_image_is_configured_as_the_dockerfile_says(image):
    inspected: dict[str, Any] = json.loads(podman("image", "inspect", image).stdout)[0]
    config = inspected["Config"]
    assert config["User"] == "10001:10001"
    assert set(config["ExposedPorts"]) == {"50051/tcp", "8081/tcp", "9090/tcp"}
    assert config["StopSignal"] == "SIGTERM"
    # The docker format keeps the HEALTHCHECK (the OCI format would have dropped it).
    assert inspected["Healthcheck"]["Test"] == [
        "CMD",
        "petsage-grpc",
        "probe",
        "-addr-file=/dev/shm/petsage-grpc.json",
        "-service=liveness",
    ]


def locked(python_version: str) -> dict[str, str]:
    """requirements/image.txt: each package the image's Python needs, and its version."""
    environment = {"python_version": python_version.rsplit(".", 1)[0]}
    environment["python_full_version"] = python_version
    pins: dict[str, str] = {}
    for line in (ROOT / "requirements" / "image.txt").read_text().splitlines():
        if line and not line.startswith((" ", "#")):
            requirement = Requirement(line.removesuffix("\\").strip())
            marker: Marker | None = requirement.marker
            if marker is None or marker.evaluate(environment):
                pins[requirement.name] = str(requirement.specifier).removeprefix("==")
    return pins


def test_image_installs_exactly_the_lock(image):
    listing = podman(
        "run",
        "--rm",
        "--entrypoint=python",
        image,
        "-c",
        "import importlib.metadata as m, json, platform; print(json.dumps([platform."
        "python_version(), {d.metadata['Name']: d.version for d in m.distributions()}]))",
    )
    assert listing.returncode == 0, listing.stderr
    python_version, installed = json.loads(listing.stdout)
    normalized = {name.lower().replace("_", "-"): version for name, version in installed.items()}
    expected = {**locked(python_version), "petsage-grpc": builder.version()}
    assert normalized == expected


SOURCE_DIGEST = (
    "import hashlib, pathlib, sys; root = pathlib.Path(sys.argv[1]); digest = hashlib.sha256()\n"
    "for path in sorted(root.rglob('*.py')):\n"
    "    digest.update(str(path.relative_to(root)).encode() + b'\\0' + path.read_bytes())\n"
    "print(digest.hexdigest())"
)


def test_image_holds_the_package_of_this_tree(image):
    package = "/opt/petsage/lib/python3.11/site-packages/petsage_grpc"
    inside = podman("run", "--rm", "--entrypoint=python", image, "-c", SOURCE_DIGEST, package)
    here = subprocess.run(
        [sys.executable, "-c", SOURCE_DIGEST, str(ROOT / "petsage_grpc")],
        capture_output=True,
        text=True,
        timeout=WAIT,
        check=True,
    )
    assert inside.stdout.strip() == here.stdout.strip() != ""


def test_image_holds_no_compiler_pip_cache_or_wheel(image):
    found = podman(
        "run",
        "--rm",
        "--user=root",
        "--entrypoint=sh",
        image,
        "-c",
        "command -v gcc cc c++ make; find / -xdev \\( -name '*.whl' -o -path '*/.cache/pip' \\)"
        " -not -path '/usr/local/lib/python3.11/ensurepip/*'",
    )
    assert found.stdout.split() == []


def test_image_adds_little_to_its_base(image):
    def size(name: str) -> int:
        return int(podman("image", "inspect", "--format", "{{.Size}}", name).stdout)

    assert size(image) - size(builder.base_image()) < 60_000_000  # 46 MB now: grpcio, asyncpg, ...


def test_base_image_is_cpython_3_11_in_usr_local(image):
    code = "import sys; print(sys.prefix, *sys.version_info[:2])"
    found = podman("run", "--rm", builder.base_image(), "python3", "-c", code)
    assert found.stdout.split() == ["/usr/local", "3", "11"]
