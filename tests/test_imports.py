"""The package's import graph: no cycles; nothing embedded imports the CLI or the commands."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from tests.helpers import ROOT, WAIT

PACKAGE = ROOT / "petsage_grpc"
COMMAND_LINE = (
    "petsage_grpc.cli",
    "petsage_grpc.commands",
    "petsage_grpc.launch",
    "petsage_grpc.__main__",
)


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports() -> dict[str, set[str]]:
    """Each module of the package, and the package's modules it imports (anywhere in it)."""
    graph: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        if "_gen" in path.parts:
            continue
        name = module_name(path)
        found = graph.setdefault(name, set())
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.add(node.module)
            elif isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
        graph[name] = {m for m in found if m.startswith("petsage_grpc.") and "_gen" not in m}
    return graph


def test_no_module_imports_itself_through_others():
    graph = imports()

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        for each in graph.get(start, ()):
            if each == goal or (each not in seen and reaches(each, goal, seen | {each})):
                return True
        return False

    assert [name for name in graph if reaches(name, name, set())] == []


def test_only_the_command_line_imports_the_command_line():
    importers = [
        (name, imported)
        for name, imported_set in imports().items()
        if not name.startswith(COMMAND_LINE)
        for imported in imported_set
        if imported.startswith(COMMAND_LINE)
    ]
    assert importers == []


def test_a_plain_server_leaves_what_only_some_servers_need_unimported():
    # Start-up is a target: the admin port, the metrics exposition, TLS files, the address file
    # and the http check bring these in only where they are used.
    only_where_used = ["h11", "prometheus_client", "httpx", "tempfile", "json"]
    program = (
        "import sys, petsage_grpc.server, petsage_grpc.config;"
        f"print(' '.join(m for m in {only_where_used!r} if m in sys.modules))"
    )
    found = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, timeout=WAIT, check=True
    )
    assert found.stdout.split() == []
