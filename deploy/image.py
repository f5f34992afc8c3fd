"""Build the container image with podman (no Docker engine needed): `make image`, and the image
test of `make test` (tests/test_image.py).

It builds the Dockerfile as petsage-grpc:VERSION in the docker format (the OCI format has no
HEALTHCHECK: podman drops it), never pulling during the build. pip in the build stage is given
this machine's CA bundle as a build secret (mounted for that step only, never in a layer), for a
package index reached through a TLS proxy whose CA only the machine's bundle holds.

The base image (the Dockerfile's FROM) is used when podman has it or can pull it. Where neither
(Docker Hub is not reachable from every machine, CI's among them), a stand-in is made under its
name: Debian bookworm from `mmdebstrap --variant=minbase`, slimmed as Debian's slim images are,
with this machine's CPython 3.11 and pip in /usr/local, as the official image has them, and the
label petsage-grpc.stand-in. Its tarball is cached under ~/.cache/petsage-grpc, keyed by
everything it is made from, so it is made once per machine.

Usage: python deploy/image.py [--tag NAME]   (one line on stderr, exit 1, when it cannot)
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shlex
import shutil
import ssl
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"
STAND_IN_LABEL = "petsage-grpc.stand-in"
CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "petsage-grpc"
BUILD_TIMEOUT = 600.0
STAND_IN_TIMEOUT = 300.0

# What the official image adds to debian:bookworm-slim, besides CPython: the libraries its
# modules load (ssl, ctypes, sqlite3, lzma, bz2, readline, uuid, ...), CA certificates, netbase
# and tzdata.
DEBIAN_PACKAGES = (
    "ca-certificates",
    "netbase",
    "tzdata",
    "libbz2-1.0",
    "libcrypt1",
    "libexpat1",
    "libffi8",
    "liblzma5",
    "libncursesw6",
    "libnsl2",
    "libreadline8",
    "libsqlite3-0",
    "libssl3",
    "libtirpc3",
    "libuuid1",
    "zlib1g",
)
# What Debian's slim images leave out.
SLIM = (
    "path-exclude=/usr/share/doc/*",
    "path-include=/usr/share/doc/*/copyright",
    "path-exclude=/usr/share/man/*",
    "path-exclude=/usr/share/info/*",
    "path-exclude=/usr/share/locale/*",
    "path-exclude=/usr/share/groff/*",
    "path-exclude=/usr/share/lintian/*",
)
# Of CPython's prefix, what the official image leaves out: tests, byte code, the static library.
PYTHON_EXCLUDES = ("site-packages/*", "test", "tests", "idle_test", "__pycache__", "*.pyc", "*.a")
IMAGE_CONFIG = (
    "ENV PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin",
    "ENV LANG=C.UTF-8",
    'CMD ["python3"]',
)


class ImageError(Exception):
    """The image cannot be built; the message is one line."""


def version() -> str:
    text = (ROOT / "petsage_grpc" / "__init__.py").read_text()
    match = re.search(r'^__version__ = "([^"]+)"', text, re.MULTILINE)
    if match is None:
        raise ImageError("petsage_grpc/__init__.py has no __version__")
    return match.group(1)


def default_tag() -> str:
    return f"petsage-grpc:{version()}"


def base_image() -> str:
    """The Dockerfile's base image, fully qualified as podman stores it."""
    names = re.findall(r"^FROM\s+(\S+)", DOCKERFILE.read_text(), re.MULTILINE)
    if not names:
        raise ImageError("the Dockerfile has no FROM")
    name = names[0]
    if "/" not in name:
        return f"docker.io/library/{name}"
    first = name.split("/", 1)[0]
    return name if "." in first or ":" in first else f"docker.io/{name}"


def run(command: list[str], timeout: float, what: str) -> subprocess.CompletedProcess[str]:
    """Run a command; ImageError with its last line of output when it fails or takes too long."""
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
        )
    except FileNotFoundError:
        raise ImageError(f"{what}: {command[0]} is not installed") from None
    except subprocess.TimeoutExpired:
        raise ImageError(f"{what} took over {timeout:g} s") from None
    if done.returncode != 0:
        lines = (done.stderr.strip() or done.stdout.strip()).splitlines()
        raise ImageError(f"{what} fails: {lines[-1] if lines else done.returncode}")
    return done


def podman(*args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    return run(["podman", *args], timeout, f"podman {args[0]}")


def inspect(name: str, template: str) -> str | None:
    """A field of a local image, or None when podman does not have it."""
    found = subprocess.run(
        ["podman", "image", "inspect", "--format", template, name],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    return found.stdout.strip() if found.returncode == 0 else None


def image_labels(name: str) -> dict[str, str] | None:
    """The labels of a local image, or None when podman does not have it."""
    found = inspect(name, "{{json .Labels}}")
    if found is None:
        return None
    labels: dict[str, str] | None = json.loads(found or "null")
    return labels or {}


def remove_replaced(name: str, before: str | None) -> None:
    """Remove the image `name` named before it was rebuilt, unless it is still in use."""
    if before is not None and inspect(name, "{{.Id}}") != before:
        subprocess.run(
            ["podman", "rmi", before], capture_output=True, timeout=60, stdin=subprocess.DEVNULL
        )


def python_prefix() -> Path:
    """This machine's CPython 3.11, built into a prefix of its own (as pyenv builds it)."""
    prefix = Path(sys.base_prefix)
    if sys.version_info[:2] != (3, 11) or prefix == Path("/usr"):
        raise ImageError(
            f"the stand-in base image needs a CPython 3.11 in a prefix of its own, not {prefix} "
            f"(Python {sys.version.split()[0]})"
        )
    for part in ("bin/python3.11", "lib/libpython3.11.so.1.0", "lib/python3.11/os.py"):
        if not (prefix / part).exists():
            raise ImageError(f"the stand-in base image needs {prefix / part}")
    return prefix


def mmdebstrap_command(tarball: Path) -> list[str]:
    """The command that makes the stand-in's root file system, CPython and pip in /usr/local."""
    prefix = python_prefix()
    excludes = " ".join(f"--exclude={shlex.quote(pattern)}" for pattern in PYTHON_EXCLUDES)
    parts = "bin/python3.11 lib/libpython3.11.so.1.0 lib/libpython3.so lib/python3.11"
    hooks = [
        f'tar -C {shlex.quote(str(prefix))} -c {excludes} {parts} | tar -C "$1/usr/local" -x',
        'chroot "$1" ldconfig',
        'ln -s python3.11 "$1/usr/local/bin/python3" && ln -s python3 "$1/usr/local/bin/python"',
        'chroot "$1" python3 -m ensurepip --default-pip',
        'find "$1/usr/local" -depth -name __pycache__ -exec rm -rf {} +',
    ]
    if shutil.which("strip"):
        hooks.insert(
            1,
            'find "$1/usr/local" -type f \\( -name "*.so*" -o -name python3.11 \\) '
            "-exec strip --strip-unneeded {} +",
        )
    return [
        "mmdebstrap",
        "--quiet",
        "--variant=minbase",
        *(f"--dpkgopt={option}" for option in SLIM),
        f"--include={','.join(DEBIAN_PACKAGES)}",
        *(f"--customize-hook={hook}" for hook in hooks),
        "bookworm",
        str(tarball),
    ]


def stand_in_key() -> str:
    """A digest of everything the stand-in is made from: the command, the interpreter's files,
    the image's configuration."""
    prefix = python_prefix()
    files = [prefix / "bin/python3.11", prefix / "lib/libpython3.11.so.1.0"]
    recipe = {
        "command": mmdebstrap_command(Path("stand-in.tar")),
        "python": [sys.version, *(f"{f.stat().st_size}:{f.stat().st_mtime}" for f in files)],
        "config": IMAGE_CONFIG,
    }
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:16]


def ensure_base() -> str:
    """The base image in podman's storage: the real one (found or pulled), else the stand-in.
    Returns its name."""
    name = base_image()
    labels = image_labels(name)
    if labels is not None and STAND_IN_LABEL not in labels:
        return name
    key = stand_in_key()
    if labels is not None and labels[STAND_IN_LABEL] == key:
        return name
    pulled = subprocess.run(
        ["podman", "pull", "--quiet", name],
        capture_output=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
    )
    if pulled.returncode == 0:
        return name
    tarball = CACHE / f"stand-in-{key}.tar"
    if not tarball.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        for stale in CACHE.glob("stand-in-*.tar"):
            stale.unlink()
        with tempfile.TemporaryDirectory(dir=CACHE) as scratch:
            made = Path(scratch) / tarball.name
            run(mmdebstrap_command(made), STAND_IN_TIMEOUT, "mmdebstrap")
            made.rename(tarball)
    changes = [*IMAGE_CONFIG, f"LABEL {STAND_IN_LABEL}={key}"]
    before = inspect(name, "{{.Id}}")
    podman("import", "--quiet", *(f"--change={c}" for c in changes), str(tarball), name)
    remove_replaced(name, before)
    return name


def host_ca_bundle() -> Path | None:
    """The CA bundle pip on this machine trusts: PIP_CERT, else the system's."""
    for candidate in (os.environ.get("PIP_CERT"), ssl.get_default_verify_paths().cafile):
        if candidate and Path(candidate).is_file():
            return Path(candidate).resolve()
    return None


def build(tag: str | None = None) -> str:
    """Build the image (podman's layer cache makes a rebuild of an unchanged tree quick).
    Returns its tag; raises ImageError."""
    tag = tag or default_tag()
    ensure_base()
    before = inspect(tag, "{{.Id}}")
    secrets = []
    ca = host_ca_bundle()
    if ca is not None:
        secrets = ["--secret", f"id=pip-ca,src={ca}"]
    podman(
        "build",
        "--format=docker",
        "--pull=never",
        *secrets,
        "--tag",
        tag,
        "--file",
        str(DOCKERFILE),
        str(ROOT),
        timeout=BUILD_TIMEOUT,
    )
    remove_replaced(tag, before)
    return tag


def main() -> int:
    parser = argparse.ArgumentParser(description="Build the container image with podman.")
    parser.add_argument("--tag", help="the image's name (default: petsage-grpc:VERSION)")
    args = parser.parse_args()
    try:
        tag = build(args.tag)
        size = int(podman("image", "inspect", "--format", "{{.Size}}", tag).stdout)
    except ImageError as exc:
        print(f"deploy/image.py: {exc}", file=sys.stderr)
        return 1
    print(f"{tag}: {size / 1e6:.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
