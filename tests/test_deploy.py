"""The Kubernetes Deployment, run as the kubelet would run it: the server starts with exactly the
container's args and env (its volumes made as directories here, its ports mapped to free ones,
as a pod's network namespace has them to itself, and its address one of 127.0.0.0/8), each probe
is a plaintext grpc.health.v1 Check of the probe's service on the probe's port with a deadline of
timeoutSeconds, and SIGTERM makes readiness fail before the process exits, within the termination
grace period. The rollout check Job runs its exact command against three such pods."""

from __future__ import annotations

import importlib.util
import shutil
import signal
import socket
import time
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from petsage_grpc import __version__
from petsage_grpc._gen.petsage.v1 import smoke_pb2, smoke_pb2_grpc
from petsage_grpc.values import parse_duration
from tests.certs import make_certs
from tests.helpers import ROOT, WAIT, CLIProcess, free_port, run_cli, wait_until, with_hosts

KUBERNETES = ROOT / "deploy" / "kubernetes"
POD_NAME = "petsage-grpc-5f7d8c9b4-x2x9q"


def render(directory: Path) -> list[dict[str, Any]]:
    """The manifests as real kustomize renders them: deploy/validate.py's `kubectl kustomize`."""
    spec = importlib.util.spec_from_file_location("validate", ROOT / "deploy" / "validate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    manifests: list[dict[str, Any]] = module.render(directory)
    return manifests


class Pod:
    """The Deployment's one container, as a process on this machine: `ip` is the pod's address
    (what 0.0.0.0 is in its own network namespace), `name` its name, `ports` the ports its
    container ports are mapped to (free ones for the others)."""

    def __init__(
        self,
        manifests: list[dict[str, Any]],
        workdir: Path,
        ip: str = "127.0.0.1",
        name: str = POD_NAME,
        ports: dict[int, int] | None = None,
    ) -> None:
        self.ip, self.name = ip, name
        workdir.mkdir(exist_ok=True)
        configmaps = {m["metadata"]["name"]: m for m in manifests if m["kind"] == "ConfigMap"}
        deployment = next(m for m in manifests if m["kind"] == "Deployment")
        pod = deployment["spec"]["template"]["spec"]
        self.grace_period = pod["terminationGracePeriodSeconds"]
        self.container = pod["containers"][0]
        volumes = {volume["name"]: volume for volume in pod["volumes"]}
        self.paths = {
            mount["mountPath"]: str(workdir / mount["name"])
            for mount in self.container["volumeMounts"]
        }
        for mount in self.container["volumeMounts"]:
            directory = workdir / mount["name"]
            directory.mkdir()
            volume = volumes[mount["name"]]
            if "configMap" in volume:
                for name, text in configmaps[volume["configMap"]["name"]]["data"].items():
                    (directory / name).write_text(self.local(text))
            elif "secret" in volume:
                (workdir / "certs").mkdir()
                certs = make_certs(workdir / "certs")
                shutil.copy(certs.server.cert, directory / "tls.crt")
                shutil.copy(certs.server.key, directory / "tls.key")
                shutil.copy(certs.ca, directory / "ca.crt")
        given = ports or {}
        self.ports = {
            port["containerPort"]: given.get(port["containerPort"]) or free_port()
            for port in self.container["ports"]
        }
        self.args = [self.local(arg) for arg in self.container["args"]]
        self.env = {item["name"]: self.value(item) for item in self.container["env"]}
        for name, value in self.env.items():
            if name.endswith("_PORT") and value.isdigit():
                self.env[name] = str(self.ports[int(value)])
            elif value == "0.0.0.0":
                self.env[name] = ip

    def value(self, item: dict[str, Any]) -> str:
        """An env item's value, the downward API's as the kubelet fills it in."""
        if "value" in item:
            return self.local(item["value"])
        field = item["valueFrom"]["fieldRef"]["fieldPath"]
        return {"metadata.name": self.name}[field]

    def local(self, text: str) -> str:
        """Container paths made into this machine's directories."""
        for mount_path in sorted(self.paths, key=len, reverse=True):  # /etc/petsage-tls first
            text = text.replace(mount_path, self.paths[mount_path])
        return text

    def probe(self, name: str) -> bool:
        """One run of a probe, as the kubelet runs a grpc probe: True if SERVING."""
        probe = self.container[name]
        port = self.ports[probe["grpc"]["port"]]
        request = health_pb2.HealthCheckRequest(service=probe["grpc"].get("service", ""))
        with grpc.insecure_channel(f"{self.ip}:{port}") as channel:
            try:
                response = health_pb2_grpc.HealthStub(channel).Check(
                    request, timeout=probe.get("timeoutSeconds", 1)
                )
            except grpc.RpcError:
                return False
        return bool(response.status == health_pb2.HealthCheckResponse.SERVING)

    def smoke_test(self) -> Any:
        """SmokeTest on the main port (plaintext)."""
        port = self.ports[
            next(p["containerPort"] for p in self.container["ports"] if p["name"] == "grpc")
        ]
        with grpc.insecure_channel(f"{self.ip}:{port}") as channel:
            stub = smoke_pb2_grpc.SmokeServiceStub(channel)
            return stub.SmokeTest(smoke_pb2.SmokeTestRequest(), timeout=WAIT)

    def started(self) -> bool:
        """The startup probe, retried every periodSeconds up to failureThreshold times."""
        probe = self.container["startupProbe"]
        for _ in range(probe["failureThreshold"]):
            if self.probe("startupProbe"):
                return True
            time.sleep(probe["periodSeconds"])  # the kubelet's period, not a wait for an event
        return False


@pytest.mark.parametrize("kustomization", [KUBERNETES, KUBERNETES / "overlays" / "mtls"])
def test_deployment_serves_its_probes_then_drains_on_sigterm(kustomization, tmp_path, processes):
    pod = Pod(render(kustomization), tmp_path)
    process = CLIProcess(pod.args, env=pod.env)
    processes.append(process)
    assert pod.started()
    assert pod.probe("livenessProbe")
    assert pod.probe("readinessProbe")

    process.send(signal.SIGTERM)
    wait_until(lambda: not pod.probe("readinessProbe"), what="readiness to fail")
    assert process.proc.poll() is None  # readiness failed while the process still served
    assert process.wait(timeout=pod.grace_period) == 0


@pytest.fixture(scope="module")
def pod_spec() -> dict[str, Any]:
    """The rendered Deployment's pod spec."""
    deployment = next(m for m in render(KUBERNETES) if m["kind"] == "Deployment")
    spec: dict[str, Any] = deployment["spec"]["template"]["spec"]
    return spec


def seconds_of(pod_spec: dict[str, Any], name: str) -> float:
    """A duration setting of the container's env, in seconds."""
    env = {item["name"]: item.get("value") for item in pod_spec["containers"][0]["env"]}
    return float(env[name].rstrip("s"))


def test_termination_grace_period_covers_drain_delay_plus_grace(pod_spec):
    drain = seconds_of(pod_spec, "PETSAGE_DRAIN_DELAY")
    grace = seconds_of(pod_spec, "PETSAGE_GRACE_PERIOD")
    assert pod_spec["terminationGracePeriodSeconds"] > drain + grace


def test_readiness_probe_fails_within_the_drain_delay(pod_spec):
    drain = seconds_of(pod_spec, "PETSAGE_DRAIN_DELAY")
    readiness = pod_spec["containers"][0]["readinessProbe"]
    assert readiness["periodSeconds"] * readiness["failureThreshold"] < drain


def test_drain_file_from_the_configmap_takes_the_pod_out_of_readiness(tmp_path, processes):
    pod = Pod(render(KUBERNETES), tmp_path)
    process = CLIProcess(pod.args, env=pod.env)
    processes.append(process)
    assert pod.started()
    wait_until(lambda: pod.probe("readinessProbe"), what="readiness")
    assert pod.smoke_test().instance == POD_NAME  # from the downward API
    Path(pod.local("/var/run/petsage/drain")).touch()  # kubectl exec POD -- touch ...
    wait_until(lambda: not pod.probe("readinessProbe"), what="readiness to fail")
    assert pod.probe("livenessProbe")


def test_datastores_overlay_config_reads_its_passwords_from_the_secret_volume(tmp_path):
    from petsage_grpc.config import Config

    manifests = render(KUBERNETES / "overlays" / "datastores")
    configmap = next(m for m in manifests if m["kind"] == "ConfigMap")
    path = tmp_path / "petsage.toml"
    path.write_text(configmap["data"]["petsage.toml"])
    config = Config.load({"config": str(path)}, {})
    passwords = {check.name: check.password for check in config.checks if check.password}
    assert passwords == {
        "postgres": "file:/etc/petsage-secrets/postgres-password",
        "redis": "file:/etc/petsage-secrets/redis-password",
    }
    deployment = next(m for m in manifests if m["kind"] == "Deployment")
    mounts = deployment["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]
    assert {"name": "datastores", "mountPath": "/etc/petsage-secrets", "readOnly": True} in mounts


def rollout_check_job() -> dict[str, Any]:
    return next(m for m in render(KUBERNETES / "rollout-check") if m["kind"] == "Job")


def test_rollout_check_job_passes_against_every_pod_of_the_deployment(tmp_path, processes):
    ips = ["127.0.0.1", "127.0.0.2", "127.0.0.3"]  # one per replica
    with socket.socket() as probe:
        probe.bind((ips[1], 0))  # Linux binds all of 127/8
    manifests = render(KUBERNETES)
    deployment = next(m for m in manifests if m["kind"] == "Deployment")
    assert deployment["spec"]["replicas"] == len(ips)
    port = free_port()  # the grpc port, the same on every pod as on the headless Service
    pods = [
        Pod(manifests, tmp_path / f"pod{i}", ip, f"petsage-grpc-5f7d8c9b4-{i}", {50051: port})
        for i, ip in enumerate(ips)
    ]
    for pod in pods:
        processes.append(CLIProcess(pod.args, env=pod.env))
    assert all(pod.started() for pod in pods)
    wait_until(lambda: all(pod.probe("readinessProbe") for pod in pods), what="readiness")

    container = rollout_check_job()["spec"]["template"]["spec"]["containers"][0]
    args = [arg.replace(":50051", f":{port}") for arg in container["args"]]
    prefix = with_hosts({"petsage-grpc-headless": ips}, tmp_path)
    result = run_cli(*args, prefix=prefix)
    assert result.returncode == 0, result.stdout + result.stderr
    rows = [line.split() for line in result.stdout.splitlines()[1:-1]]
    assert [(row[0], row[1], row[2], row[3]) for row in rows] == [
        (f"{pod.ip}:{port}", pod.name, __version__, "OK") for pod in pods
    ]
    assert result.stdout.splitlines()[-1] == f"3/3 endpoints OK on {__version__}"


def test_rollout_check_pod_is_selected_by_no_service_and_outlasts_its_wait():
    job = rollout_check_job()
    labels = job["spec"]["template"]["metadata"]["labels"]
    for selecting in render(KUBERNETES):
        selector = selecting.get("spec", {}).get("selector", {})
        selector = selector.get("matchLabels", selector)
        if selector:
            assert not selector.items() <= labels.items(), selecting["metadata"]["name"]
    args = dict(
        arg.removeprefix("-").split("=", 1)
        for arg in job["spec"]["template"]["spec"]["containers"][0]["args"]
        if "=" in arg
    )
    one_round = parse_duration(args["connect-timeout"]) + parse_duration(args["rpc-timeout"])
    assert job["spec"]["activeDeadlineSeconds"] > parse_duration(args["wait"]) + one_round
    assert job["spec"]["backoffLimit"] == 0
