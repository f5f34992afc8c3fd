"""Render a kustomization as `kubectl apply -k` would, for the parts this repository uses:
`resources` (files and other kustomizations), `labels` (added to metadata) and `patches`
(strategic-merge patches; lists of named items merge by name).

Usage: python deploy/render.py DIR   (prints the manifests as one YAML stream)
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path
from typing import Any

import yaml

Manifest = dict[str, Any]


def render(directory: Path) -> list[Manifest]:
    """The manifests of the kustomization in `directory`, patched and labelled."""
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    manifests: list[Manifest] = []
    for resource in kustomization.get("resources", []):
        path = (directory / resource).resolve()
        if path.is_dir():
            manifests += render(path)
        else:
            manifests += [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    for patch in kustomization.get("patches", []):
        change = yaml.safe_load((directory / patch["path"]).read_text())
        target = _find(manifests, change["kind"], change["metadata"]["name"])
        manifests[manifests.index(target)] = merge(target, change)
    for labels in kustomization.get("labels", []):
        for manifest in manifests:
            manifest.setdefault("metadata", {}).setdefault("labels", {}).update(labels["pairs"])
    return manifests


def merge(base: Any, change: Any) -> Any:
    """A strategic merge: maps merge key by key, lists of named maps merge by name."""
    if isinstance(base, dict) and isinstance(change, dict):
        merged = copy.deepcopy(base)
        for key, value in change.items():
            merged[key] = merge(base[key], value) if key in base else copy.deepcopy(value)
        return merged
    if _named(base) and _named(change):
        # As kustomize orders them: the patch's new items first, then the base's, merged.
        changes = {item["name"]: item for item in change}
        names = {item["name"] for item in base}
        added = [copy.deepcopy(item) for item in change if item["name"] not in names]
        kept = [
            merge(item, changes[item["name"]]) if item["name"] in changes else copy.deepcopy(item)
            for item in base
        ]
        return added + kept
    return copy.deepcopy(change)


def _named(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(i, dict) and "name" in i for i in value)


def _find(manifests: list[Manifest], kind: str, name: str) -> Manifest:
    for manifest in manifests:
        if manifest["kind"] == kind and manifest["metadata"]["name"] == name:
            return manifest
    raise LookupError(f"no {kind} {name!r} to patch")


if __name__ == "__main__":
    print(yaml.safe_dump_all(render(Path(sys.argv[1])), sort_keys=False), end="")
