"""The lock: uv.lock agrees with pyproject.toml, each requirements/*.txt is exactly what uv exports
from it (the files pip installs, in make install and in the image), and the build backend is
locked as build-system.requires asks."""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests.helpers import ROOT, WAIT

UV = Path(sys.executable).parent / "uv"
REQUIREMENTS = sorted((ROOT / "requirements").glob("*.txt"))
HEADER_LINES = 2
"""uv's header: a line of its own, then the command that wrote the file."""


def uv(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(UV), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=WAIT * 6,
        check=False,
    )


def reason(result: subprocess.CompletedProcess[str]) -> str:
    """uv's error line (or its last line) of a failed run."""
    lines = (result.stderr or result.stdout).strip().splitlines()
    errors = [line for line in lines if line.startswith("error:")]
    return (errors or lines or [f"exit status {result.returncode}"])[-1]


def test_lock_agrees_with_pyproject():
    result = uv("lock", "--check", "--python", sys.executable)
    assert result.returncode == 0, f"uv.lock is stale (make lock): {reason(result)}"


def test_lock_check_fails_once_pyproject_asks_for_something_else(tmp_path):
    for name in ("pyproject.toml", "uv.lock", "README.md", "petsage_grpc/__init__.py"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        shutil.copy(ROOT / name, tmp_path / name)
    pyproject = tmp_path / "pyproject.toml"
    text = pyproject.read_text()
    assert '"h11>=0.14",' in text
    pyproject.write_text(text.replace('"h11>=0.14",', '"h11>=0.14", "six",'))
    result = uv("lock", "--check", "--python", sys.executable, cwd=tmp_path)
    assert result.returncode != 0
    assert "needs to be updated" in result.stderr


@pytest.mark.parametrize("path", REQUIREMENTS, ids=[path.name for path in REQUIREMENTS])
def test_requirements_file_is_what_uv_exports_from_the_lock(path, tmp_path):
    header = path.read_text().splitlines(keepends=True)
    command = shlex.split(header[1].removeprefix("#"))
    assert command[:2] == ["uv", "export"] and "--frozen" in command
    output = command.index("-o") + 1
    assert command[output] == f"requirements/{path.name}"
    command[output] = str(tmp_path / path.name)
    result = uv(*command[1:])
    assert result.returncode == 0, reason(result)
    exported = (tmp_path / path.name).read_text().splitlines(keepends=True)
    assert exported[HEADER_LINES:] == header[HEADER_LINES:], f"make lock rewrites {path.name}"


def test_requirements_holds_the_image_build_and_dev_exports():
    assert {path.name for path in REQUIREMENTS} == {"build.txt", "dev.txt", "image.txt"}


def test_the_locked_build_backend_is_what_the_build_system_requires():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert pyproject["dependency-groups"]["build"] == pyproject["build-system"]["requires"]
