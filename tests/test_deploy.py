"""The Kubernetes Deployment, run as the kubelet would run it: the server starts with exactly the
container's args and env (its volumes made as directories here, its ports mapped to free ones,
as a pod's network namespace has them to itself), each probe is a plaintext grpc.health.v1 Check
of the probe's service on the probe's port with a deadline of timeoutSeconds, and SIGTERM makes
readiness fail before the process exits, within the termination grace period."""

from __future__ import annotations

import importlib.util
import shutil
import signal
import time
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from petsage_grpc._gen.petsage.v1 import smoke_pb2, smoke_pb2_grpc
from tests.certs import make_certs
from tests.helpers import ROOT, WAIT, CLIProcess, free_port, wait_until

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
    """The Deployment's one container, as a process on this machine."""

    def __init__(self, manifests: list[dict[str, Any]], workdir: Path) -> None:
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
        self.ports = {port["containerPort"]: free_port() for port in self.container["ports"]}
        self.args = [self.local(arg) for arg in self.container["args"]]
        self.env = {item["name"]: self.value(item) for item in self.container["env"]}
        for name, value in self.env.items():
            if name.endswith("_PORT") and value.isdigit():
                self.env[name] = str(self.ports[int(value)])

    def value(self, item: dict[str, Any]) -> str:
        """An env item's value, the downward API's as the kubelet fills it in."""
        if "value" in item:
            return self.local(item["value"])
        field = item["valueFrom"]["fieldRef"]["fieldPath"]
        return {"metadata.name": POD_NAME}[field]

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
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
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
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
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
def test_deployment_probes_pass_and_sigterm_fails_readiness_before_exit(
    kustomization, tmp_path, processes
):
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


def test_grace_period_covers_drain_delay_and_grace():
    manifests = render(KUBERNETES)
    deployment = next(m for m in manifests if m["kind"] == "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    env = {item["name"]: item.get("value") for item in pod["containers"][0]["env"]}
    drain = float(env["PETSAGE_DRAIN_DELAY"].rstrip("s"))
    grace = float(env["PETSAGE_GRACE_PERIOD"].rstrip("s"))
    assert pod["terminationGracePeriodSeconds"] > drain + grace
    readiness = pod["containers"][0]["readinessProbe"]
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
