"""Validate every kustomization under deploy/kubernetes against the Kubernetes schema of a
pinned version (kubernetes-validate, strict: unknown fields are errors). No cluster needed.
Where kubectl is installed, each kustomization must also build with real kustomize and render
exactly as deploy/render.py renders it.

Usage: python deploy/validate.py   (exit 1 with one line per problem)
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import yaml

sys.path.insert(0, str(Path(__file__).parent))
from render import render

KUBERNETES_VERSION = "1.33.0"
ROOT = Path(__file__).parent / "kubernetes"


def kustomize_differs(directory: Path, manifests: list[dict[str, Any]]) -> str | None:
    """Where kubectl is installed, what real kustomize renders differently (None: the same)."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        return None
    built = subprocess.run(
        [kubectl, "kustomize", str(directory)], capture_output=True, text=True, timeout=120
    )
    if built.returncode != 0:
        return f"kubectl kustomize fails: {built.stderr.strip().splitlines()[-1]}"
    theirs = [doc for doc in yaml.safe_load_all(built.stdout) if doc]
    key = lambda m: (m["kind"], m["metadata"]["name"])  # noqa: E731
    if sorted(theirs, key=key) != sorted(manifests, key=key):
        return "deploy/render.py renders it otherwise than kubectl kustomize"
    return None


def main() -> int:
    problems = []
    kustomizations = sorted(path.parent for path in ROOT.rglob("kustomization.yaml"))
    for directory in kustomizations:
        manifests = render(directory)
        if (difference := kustomize_differs(directory, manifests)) is not None:
            problems.append(f"{directory.relative_to(ROOT.parent)}: {difference}")
        for manifest in manifests:
            where = (
                f"{directory.relative_to(ROOT.parent)}: {manifest['kind']}/"
                + (manifest["metadata"]["name"])
            )
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
