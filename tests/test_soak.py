"""The soak test, short: 30 seconds of the steady mix with every kind of fault (make soak runs it
for 5 minutes). It asserts what bench/soak.py asserts, and prints its table on failure."""

from __future__ import annotations

import subprocess
import sys

from tests.helpers import ROOT


def test_thirty_second_soak_holds_every_assertion():
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "soak.py"), "--seconds", "30"],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=ROOT,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr[-2000:]
    assert "every assertion held" in result.stdout
