"""The committed stubs are exactly what `make proto` generates from protos/ now."""

from __future__ import annotations

import filecmp
import subprocess
import sys
from pathlib import Path

from tests.helpers import ROOT

GENERATED = ROOT / "petsage_grpc" / "_gen"


def test_generated_stubs_match_the_proto(tmp_path: Path):
    subprocess.run(
        ["make", "-s", "generate", f"PROTO_OUT={tmp_path}", f"GEN_PYTHON={sys.executable}"],
        cwd=ROOT,
        check=True,
        timeout=120,
        capture_output=True,
    )
    fresh = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    committed = sorted(
        p.relative_to(GENERATED)
        for p in GENERATED.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    )
    assert fresh == committed, "run `make proto`"
    stale = [str(p) for p in fresh if not filecmp.cmp(tmp_path / p, GENERATED / p, shallow=False)]
    assert stale == [], f"stale generated files {stale}: run `make proto`"
