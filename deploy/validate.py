"""Validate every kustomization under deploy/kubernetes against the Kubernetes schema of a
pinned version (kubernetes-validate, strict: unknown fields are errors). No cluster needed.

Usage: python deploy/validate.py   (exit 1 with one line per problem)
"""

from __future__ import annotations

import sys
from pathlib import Path

import kubernetes_validate

sys.path.insert(0, str(Path(__file__).parent))
from render import render

KUBERNETES_VERSION = "1.33.0"
ROOT = Path(__file__).parent / "kubernetes"


def main() -> int:
    problems = []
    kustomizations = sorted(path.parent for path in ROOT.rglob("kustomization.yaml"))
    for directory in kustomizations:
        for manifest in render(directory):
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
